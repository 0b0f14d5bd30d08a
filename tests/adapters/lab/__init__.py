"""Tests of adapters/lab: the lab client, physics and reference server."""
