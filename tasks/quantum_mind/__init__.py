"""quantum-mind: The Well physics to verified Qiskit circuits; its evaluation."""
