"""Tests of adapters/qubo: QUBO solvers and the solver choice."""
