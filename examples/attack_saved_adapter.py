"""Attack a saved peft adapter with the membership-inference library (TM-01 / TM-03 / TM-04).

    python examples/attack_saved_adapter.py --base small \
        --adapter runs/demo/predictions/adapters/peer-0 \
        --members my_train.txt --nonmembers my_heldout.txt [--population other_peer.txt]

``--members`` / ``--nonmembers`` are text files (one document per line, or .jsonl / .csv as the
toolkit reads them): records you know were / were not in the adapter's training data, from the
same distribution. ``--population`` (optional) is data the attacker holds from that distribution;
it enables the shadow-model attacks (LiRA, RMIA) and the population-reference attack, which train
adapters with the recipe given by ``--config`` (a run TOML; default: the toolkit's defaults).
Prints ROC AUC and TPR at 1% / 0.1% FPR per attack; ``--json PATH`` also writes every attack's
metrics, parameters and per-example scores (members and non-members in file order).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
from peft import PeftModel

from secure_pcft.audit import AuditTarget, Recipe, make_attack
from secure_pcft.config import ModelConfig, RunConfig, load_config
from secure_pcft.data.blocks import encode_blocks
from secure_pcft.data.readers import read_documents
from secure_pcft.fileio import write_json_atomic
from secure_pcft.model.loading import load_base, resolve_base_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", default="small", help="'small', a model dir or a .gguf file")
    p.add_argument("--adapter", type=Path, required=True, help="peft adapter directory")
    p.add_argument("--members", type=Path, required=True)
    p.add_argument("--nonmembers", type=Path, required=True)
    p.add_argument("--population", type=Path, help="attacker-held data (enables shadow attacks)")
    p.add_argument("--config", type=Path, help="run TOML with the victim's recipe (lora, train)")
    p.add_argument("--block-size", type=int, default=64, help="tokens per record")
    p.add_argument("--shadows", type=int, default=4)
    p.add_argument("--json", type=Path, help="also write the results (metrics + scores) here")
    args = p.parse_args()

    base = load_base(resolve_base_path(ModelConfig(base=args.base)))
    # A private copy of the base carries the adapter; the original stays the clean reference.
    model = PeftModel.from_pretrained(copy.deepcopy(base.model), str(args.adapter))
    model.eval()
    tok, bs = base.tokenizer, args.block_size
    members = encode_blocks(read_documents(args.members), tok, bs)
    nonmembers = encode_blocks(read_documents(args.nonmembers), tok, bs)
    population = (
        encode_blocks(read_documents(args.population), tok, bs) if args.population else members[:0]
    )
    cfg = load_config(args.config) if args.config else RunConfig()
    target = AuditTarget(
        base=base, recipe=Recipe.from_run(cfg), model=model, members=members,
        nonmembers=nonmembers, population=population, reference=members[:0],
    )  # fmt: skip
    attacks = [("loss", {}), ("reference", {"reference": "base"})]
    if args.population:
        attacks += [
            ("reference", {"reference": "population"}),
            ("lira-offline", {"shadows": args.shadows}),
            ("rmia", {"shadows": args.shadows}),
        ]
    print(f"{members.shape[0]} member / {nonmembers.shape[0]} non-member records of {bs} tokens")
    print(f"{'attack':<28}{'ROC AUC':>9}{'TPR@1%':>9}{'TPR@0.1%':>10}")
    written = []
    for i, (name, params) in enumerate(attacks):
        result = make_attack(name, **params).run(target, np.random.default_rng(i))
        written.append({"params": params, **result.to_dict(include_scores=True)})
        m = result.metrics
        label = name + (f" ({params['reference']})" if "reference" in params else "")
        print(
            f"{label:<28}{m['roc_auc']:>9.3f}{m['tpr_at_1pct_fpr']:>9.3f}"
            f"{m['tpr_at_0.1pct_fpr']:>10.3f}"
        )
    print(f"(TPR at an FPR below 1/{nonmembers.shape[0]} is the TPR at FPR = 0: no interpolation)")
    if args.json:
        record = {
            "adapter": str(args.adapter),
            "base": str(args.base),
            "block_size": bs,
            "members": int(members.shape[0]),
            "nonmembers": int(nonmembers.shape[0]),
            "attacks": written,
        }
        print(f"wrote {write_json_atomic(args.json, record)}")


if __name__ == "__main__":
    main()
