"""Tests of adapters/teachers: the teacher protocol and its teachers."""
