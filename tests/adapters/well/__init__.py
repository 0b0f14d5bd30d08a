"""Tests of adapters/well: The Well reader, writer, solvers and CLI."""
