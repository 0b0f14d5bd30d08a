"""Language models: base-model resolution, llama.cpp, Ollama, teacher logits."""
