"""Tests of tasks/quantum_mind and the quantum-mind flow."""
