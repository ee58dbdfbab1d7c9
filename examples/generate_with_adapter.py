"""Load a personalised adapter written by a run with plain peft and generate text.

    python examples/generate_with_adapter.py runs/demo/predictions/adapters/peer-0 "Meine Damen und Herren"
    python examples/generate_with_adapter.py ADAPTER_DIR "prompt" --base /path/to/the/base/folder

The adapter folder names its base (``base_model.json``: name and SHA-256 of every file); the base
is taken from ``--base`` or from the toolkit's cache, and must hash to what was recorded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from secure_pcft.model.export import resolve_adapter_base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adapter", type=Path, help="an adapter folder, <output>/adapters/<peer>")
    ap.add_argument("prompt", nargs="?", default="The")
    ap.add_argument("--base", type=Path, default=None, help="the base folder (default: cache)")
    ap.add_argument("--tokens", type=int, default=40, help="tokens to sample")
    args = ap.parse_args()
    base_dir = resolve_adapter_base(args.adapter, args.base)
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    model = PeftModel.from_pretrained(base, args.adapter).eval()
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(args.tokens):
            probs = torch.softmax(model(input_ids=ids).logits[0, -1] / 0.8, dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=g).view(1, 1)], dim=1)
    print(tokenizer.decode(ids[0], skip_special_tokens=True))


if __name__ == "__main__":
    main()
