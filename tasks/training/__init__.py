"""The shared training path: mixing, SFT, GGUF export and parity, Ollama."""
