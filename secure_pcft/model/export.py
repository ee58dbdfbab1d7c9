"""Portable adapter folders: a peft adapter that names its base by identity, not by path, with a card.

A run writes one folder per peer (``<output>/adapters/<peer>``) holding the model the peer keeps
(the best it saw on its validation split, collab/keep_best.py), and inside it ``last/``, the same
layout for its last round's adapter::

    adapter_model.safetensors   the LoRA tensors (peft)
    adapter_config.json         peft's config; ``base_model_name_or_path`` = the base's *name*
                                (its folder name, e.g. ``small-81bcca2cc90fdaa1``), never a path
    base_model.json             the base's name and the SHA-256 of each of its files
    README.md                   model card: base, LoRA, collaboration, privacy, how to load it

peft writes the absolute path of the machine that trained the adapter into
``base_model_name_or_path``, so the folder did not load elsewhere as it was. Here the base is found
by :func:`resolve_adapter_base`: an explicit base folder, else the toolkit's cache by name, and in
both cases its files must hash to what ``base_model.json`` recorded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftModel

from secure_pcft import bounded_json
from secure_pcft.errors import CorruptFileError, ModelError
from secure_pcft.fileio import write_json_atomic, write_text_atomic
from secure_pcft.model.cache import file_digests, sha256_file

BASE_RECORD = "base_model.json"
BASE_RECORD_FORMAT = "secure-pcft-adapter-base/1"
_RECORD_LIMITS = bounded_json.JsonLimits(max_bytes=1024 * 1024, max_depth=4)


def base_fingerprint(base_path: Path) -> dict[str, Any]:
    """Name and per-file SHA-256 of a base folder (or single ``.gguf`` file). Compute once per run."""
    p = Path(base_path)
    if p.is_file():
        files = {p.name: sha256_file(p)}
    elif p.is_dir():
        files = file_digests(p)  # the same digests a cached base's build record pins
    else:
        raise ModelError(f"base {p}: no such file or folder")
    return {"format": BASE_RECORD_FORMAT, "name": p.name, "files_sha256": files}


def lora_facts(model: PeftModel) -> dict[str, Any]:
    """r, alpha and target modules of the model's LoRA adapter, for the card."""
    config = model.peft_config["default"]
    if not isinstance(config, LoraConfig):
        raise ModelError(f"expected a LoRA adapter, found {type(config).__name__}")
    targets = config.target_modules
    names = [targets] if isinstance(targets, str) else sorted(targets or [])
    return {"r": config.r, "alpha": config.lora_alpha, "targets": names}


def export_adapter(
    model: PeftModel,
    directory: Path,
    base: Mapping[str, Any],
    card: Mapping[str, Any],
) -> Path:
    """Write a portable adapter folder (see the module docstring).

    Args:
        model: the peer's peft model.
        directory: the folder to write (created).
        base: :func:`base_fingerprint` of the base the adapter was trained on.
        card: facts for the model card — ``peer``, ``strategy``, ``lora`` (mode, r, alpha,
            targets), ``rounds``, ``privacy`` (the peer's ledger summary, or None without DP),
            ``security`` (channel mode), ``test_ppl`` (last round, optional), ``kept`` (the
            kept model's figures, optional), ``role`` (``kept`` or ``last``, optional).
    """
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base["name"]
    write_json_atomic(config_path, config)
    write_json_atomic(directory / BASE_RECORD, dict(base))
    write_text_atomic(directory / "README.md", model_card(base, card))
    return directory


def resolve_adapter_base(adapter_dir: Path, base: Path | None = None) -> Path:
    """The base folder an exported adapter was trained on, its files verified by SHA-256.

    Args:
        adapter_dir: a folder written by :func:`export_adapter`.
        base: where the base is on this machine; default: the toolkit's cache
            (``~/.cache/secure-pcft/bases/<name>``), where ``secure-pcft base`` builds it.

    Raises:
        CorruptFileError: ``base_model.json`` missing or malformed.
        ModelError: the base cannot be found, or its files differ from the recorded ones.
    """
    record_path = Path(adapter_dir) / BASE_RECORD
    try:
        raw = record_path.read_bytes()
    except OSError as exc:
        raise CorruptFileError(f"{record_path}: unreadable ({exc.strerror})") from None
    record = bounded_json.loads(raw, _RECORD_LIMITS, CorruptFileError, str(record_path))
    if (
        not isinstance(record, dict)
        or record.get("format") != BASE_RECORD_FORMAT
        or not isinstance(record.get("name"), str)
        or not isinstance(record.get("files_sha256"), dict)
    ):
        raise CorruptFileError(f"{record_path}: not a {BASE_RECORD_FORMAT} record")
    if base is None:
        base = Path("~/.cache/secure-pcft/bases").expanduser() / record["name"]
    if not Path(base).exists():
        raise ModelError(
            f"base {record['name']!r} not found at {base}; pass the base folder explicitly"
        )
    found = base_fingerprint(Path(base))["files_sha256"]
    if found != record["files_sha256"]:
        differ = sorted(set(found) ^ set(record["files_sha256"])) or sorted(
            k for k in found if found[k] != record["files_sha256"][k]
        )
        raise ModelError(
            f"base at {base} is not the one this adapter was trained on "
            f"(files differ: {', '.join(differ[:5])})"
        )
    return Path(base)


def _which_model(card: Mapping[str, Any]) -> list[str]:
    """Card lines: which of the peer's models this folder holds, and both models' figures."""
    kept, last_ppl = card.get("kept"), card.get("test_ppl")
    out = []
    if card.get("role") == "kept" and isinstance(kept, Mapping):
        out.append(
            f"- this is the model the peer **keeps**: the best it saw on its own validation split "
            f"(`{kept['origin']}`; its starting point was `{kept['start']['origin']}`); the last "
            "round's adapter is in `last/`"
        )
    elif card.get("role") == "last":
        out.append(
            "- this is the peer's **last round's** adapter (what it last trained and released)"
        )
    if isinstance(kept, Mapping):
        out.append(
            f"- test perplexity on the peer's own held-out split: kept {kept['test_ppl']:.2f}, "
            f"starting point {kept['start']['test_ppl']:.2f}, base {kept['base_test_ppl']:.2f}"
            + (f", last round {last_ppl:.2f}" if last_ppl is not None else "")
        )
    elif last_ppl is not None:
        out.append(f"- test perplexity on the peer's own held-out split: {last_ppl:.2f}")
    return out


_UNIT_LINES = {
    "block": "one training block (a fixed-length token window of the peer's text; a longer "
    "document only as a group)",
    "document": "one document of the peer's text, whatever its length",
    "subject": "one data subject: all of the peer's documents of that subject",
}


def model_card(base: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    """The adapter's README.md: what it is, what trained it, what privacy it carries, how to load."""
    lora = card.get("lora", {})
    privacy = card.get("privacy")
    lines = [
        f"# LoRA adapter of peer `{card.get('peer', '?')}` (secure-pcft)",
        "",
        "A personalised LoRA adapter from a secure-pcft collaboration: trained on this peer's own",
        "text, averaged with the adapters of peers its trust rule chose. No training text is in",
        "this folder.",
        "",
        "## Base model",
        "",
        f"- name: `{base['name']}` (the SHA-256 of each of its files is in `{BASE_RECORD}`)",
        "",
        "## Training",
        "",
        f"- strategy: `{card.get('strategy', '?')}`",
        f"- LoRA: mode `{lora.get('mode', '?')}`, r {lora.get('r', '?')}, "
        f"alpha {lora.get('alpha', '?')}, targets {', '.join(lora.get('targets', [])) or '?'}",
        f"- collaboration rounds: {card.get('rounds', '?')}; channel: {card.get('security', '?')}",
    ]
    lines += _which_model(card)
    lines += ["", "## Privacy", ""]
    if privacy:
        lines += [
            f"- differential privacy (DP-SGD): ε = {privacy['epsilon_spent']:.4f} spent at "
            f"δ = {privacy['delta']:g} ({privacy['accountant']} accountant), budget "
            f"{privacy['budget_epsilon']}",
            f"- unit of privacy: {_UNIT_LINES.get(str(privacy.get('unit', 'block')), '?')}",
            f"- ledger: `{Path(str(privacy['ledger'])).name}` (verify with `secure-pcft ledger`)",
        ]
        if privacy.get("stopped_sharing_round") is not None:
            lines.append(f"- stopped sharing at round {privacy['stopped_sharing_round']} (budget)")
        if card.get("role") == "kept":
            lines.append(
                "- this kept model was chosen with exact scores on the peer's private validation "
                "split: it is DP with respect to the training data, not the validation data. "
                "It is for the site's own use; the DP release is the last round's adapter (`last/`)"
            )
    else:
        lines.append("- **no differential privacy**: the adapter may reveal its training text.")
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "from pathlib import Path",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "from secure_pcft.model.export import resolve_adapter_base",
        "",
        'adapter = Path("path/to/this/folder")',
        "base_dir = resolve_adapter_base(adapter)  # or resolve_adapter_base(adapter, Path(...))",
        "base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)",
        "tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)",
        "model = PeftModel.from_pretrained(base, adapter)",
        "```",
        "",
    ]
    return "\n".join(lines)
