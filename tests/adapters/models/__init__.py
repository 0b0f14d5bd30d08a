"""Tests of adapters/models: Ollama."""
