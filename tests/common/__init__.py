"""Tests of tasks/common: stages, their keys and locks, shards, user errors."""
