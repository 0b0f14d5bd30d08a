"""Tests of tasks/training: mixing, SFT, GGUF export, Ollama install."""
