"""Tests of adapters/sandbox: isolation and results of untrusted code."""
