"""Overrides that shrink a project flow for a test: a few short SFT steps on the embedded model, since SFT
tokens are most of an end-to-end test's time on a CPU. The learning rate stays moderate: after a few steps at
1e-3 the model's digits become near-ties that llama.cpp and transformers break differently (parity < 0.95)."""

TINY_SFT = ["sft.trainer.max_steps=6", "sft.trainer.per_device_train_batch_size=2", "sft.trainer.learning_rate=5e-4",
            "sft.trainer.save_steps=3", "sft.trainer.max_length=384"]
