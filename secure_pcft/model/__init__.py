"""Base models (local path, GGUF, or built by the toolkit), LoRA via peft, adapter state."""
