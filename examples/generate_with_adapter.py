"""Load a personalised adapter written by a run with plain peft and generate text.

python examples/generate_with_adapter.py runs/demo/predictions/adapters/peer-0 "Meine Damen und Herren"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    adapter_dir, prompt = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "The"
    base_path = json.loads((adapter_dir / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ]
    tokenizer = AutoTokenizer.from_pretrained(base_path, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(base_path, local_files_only=True)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(40):
            probs = torch.softmax(model(input_ids=ids).logits[0, -1] / 0.8, dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=g).view(1, 1)], dim=1)
    print(tokenizer.decode(ids[0]))


if __name__ == "__main__":
    main()
