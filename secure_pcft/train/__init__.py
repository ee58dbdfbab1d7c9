"""Local training and evaluation of a peer's LoRA adapter."""
