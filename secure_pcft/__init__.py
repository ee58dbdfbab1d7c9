"""secure-pcft: privacy-hardened personalised collaborative LoRA fine-tuning of causal LMs."""

__version__ = "0.1.0"
