"""The toolkit-built small base: tiny real builds (seconds), cache reuse, corruption, interruption."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from secure_pcft.errors import ConfigError, CorruptFileError, DataError
from secure_pcft.model import cache, small_base
from secure_pcft.model.cache import BUILD_INFO, read_build_info
from secure_pcft.model.small_base import (
    GPT2_LORA_TARGETS,
    TINY_SMALL_BASE,
    SmallBaseSpec,
    build_small_base,
    ensure_small_base,
    small_base_dir,
    text_fingerprint,
)

_SUBJECTS = ("The council", "A new report", "The minister", "Shares in the firm", "The club")
_VERBS = ("said on Monday that", "warned that", "announced that", "denied that", "expects that")
_OBJECTS = (
    "prices would rise.",
    "the deal was off.",
    "jobs were at risk.",
    "the vote would go ahead.",
)


def _texts(n: int = 40, salt: str = "") -> list[str]:
    """Deterministic English-like documents (no corpus is read by unit tests)."""
    docs = []
    for i in range(n):
        sentences = [
            f"{_SUBJECTS[(i + k) % 5]} {_VERBS[(i * 3 + k) % 5]} {_OBJECTS[(i + 2 * k) % 4]}"
            for k in range(6)
        ]
        docs.append(f"Story {i}{salt}. " + " ".join(sentences))
    return docs


class _CountingFactory:
    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)
        self.calls = 0

    def __call__(self) -> Sequence[str]:
        self.calls += 1
        return self.texts


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "base"
    return build_small_base(_texts(), out, TINY_SMALL_BASE, source="unit-test texts")


@pytest.fixture
def count_builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    built: list[Path] = []
    real = small_base.build_small_base

    def counting(*args: object, **kwargs: object) -> Path:
        path = real(*args, **kwargs)  # type: ignore[arg-type]
        built.append(path)
        return path

    monkeypatch.setattr(small_base, "build_small_base", counting)
    return built


def test_built_directory_loads_with_auto_classes(tiny_base: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)

    ids = tokenizer("The minister warned that prices would rise.", return_tensors="pt").input_ids
    logits = model(input_ids=ids).logits

    assert type(model).__name__ == "GPT2LMHeadModel"
    assert 256 < len(tokenizer) <= TINY_SMALL_BASE.vocab_size == model.config.vocab_size
    assert logits.shape == (1, ids.shape[1], TINY_SMALL_BASE.vocab_size)
    assert tokenizer.eos_token == tokenizer.pad_token == small_base.SPECIAL_TOKEN
    assert tokenizer.decode(ids[0]) == "The minister warned that prices would rise."
    assert {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()} >= set(GPT2_LORA_TARGETS)


def test_byte_level_tokenizer_encodes_unseen_scripts(tiny_base: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    text = "Größere Bäume – ça déménage, però è così. Привет"

    ids = tokenizer(text).input_ids

    assert tokenizer.decode(ids) == text


def test_build_info_records_spec_and_measurements(tiny_base: Path) -> None:
    info = read_build_info(tiny_base)

    assert info["spec"] == TINY_SMALL_BASE.to_dict()
    assert info["steps"] == TINY_SMALL_BASE.steps
    assert info["text_fingerprint"] == text_fingerprint(_texts())
    assert info["source"] == "unit-test texts"
    assert info["torch_version"] == torch.__version__
    assert math.isfinite(info["heldout_ppl"]) and info["heldout_ppl"] > 1.0
    assert math.isfinite(info["final_train_loss"])
    assert set(info["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}


def test_build_is_deterministic_and_leaves_global_rng_alone(
    tmp_path: Path, tiny_base: Path
) -> None:
    before = torch.get_rng_state()

    again = build_small_base(_texts(), tmp_path / "again", TINY_SMALL_BASE)

    assert torch.equal(torch.get_rng_state(), before)
    assert read_build_info(again)["files"] == read_build_info(tiny_base)["files"]


def test_progress_callback_sees_every_step(tmp_path: Path) -> None:
    seen: list[tuple[int, int, float]] = []

    build_small_base(_texts(), tmp_path / "b", TINY_SMALL_BASE, progress=lambda *a: seen.append(a))

    assert [s for s, _, _ in seen] == list(range(1, TINY_SMALL_BASE.steps + 1))
    assert all(total == TINY_SMALL_BASE.steps and math.isfinite(loss) for _, total, loss in seen)


def test_ensure_reuses_a_valid_cache(tmp_path: Path, count_builds: list[Path]) -> None:
    factory = _CountingFactory(_texts())
    first = ensure_small_base(tmp_path, factory, TINY_SMALL_BASE)
    mtime = (first / BUILD_INFO).stat().st_mtime_ns

    second = ensure_small_base(tmp_path, factory, TINY_SMALL_BASE)

    assert second == first
    assert len(count_builds) == 1
    assert (second / BUILD_INFO).stat().st_mtime_ns == mtime
    assert first == small_base_dir(tmp_path, TINY_SMALL_BASE, text_fingerprint(_texts()))


def test_ensure_keys_on_spec_and_texts(tmp_path: Path, count_builds: list[Path]) -> None:
    a = ensure_small_base(tmp_path, lambda: _texts(), TINY_SMALL_BASE)
    b = ensure_small_base(tmp_path, lambda: _texts(salt="x"), TINY_SMALL_BASE)
    c = ensure_small_base(
        tmp_path, lambda: _texts(), SmallBaseSpec(**{**TINY_SMALL_BASE.to_dict(), "seed": 1})
    )

    assert len({a, b, c}) == 3
    assert len(count_builds) == 3
    assert "<lambda>" in read_build_info(a)["source"]  # default source: the factory's name


@pytest.mark.parametrize(
    "damage", ["truncate-weights", "garbage-info", "delete-tokenizer", "edit-config"]
)
def test_ensure_rebuilds_a_corrupt_cache(
    tmp_path: Path, count_builds: list[Path], damage: str
) -> None:
    path = ensure_small_base(tmp_path, lambda: _texts(), TINY_SMALL_BASE)
    if damage == "truncate-weights":
        weights = path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garbage-info":
        (path / BUILD_INFO).write_text("{not json", encoding="utf-8")
    elif damage == "delete-tokenizer":
        (path / "tokenizer.json").unlink()
    else:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        (path / "config.json").write_text(json.dumps({**config, "n_layer": 1}), encoding="utf-8")
    with pytest.raises(CorruptFileError):
        read_build_info(path)

    rebuilt = ensure_small_base(tmp_path, lambda: _texts(), TINY_SMALL_BASE)

    assert rebuilt == path
    assert len(count_builds) == 2
    assert read_build_info(rebuilt)["spec"] == TINY_SMALL_BASE.to_dict()
    AutoModelForCausalLM.from_pretrained(rebuilt)


def test_ensure_rebuilds_when_recorded_spec_differs(
    tmp_path: Path, count_builds: list[Path]
) -> None:
    path = ensure_small_base(tmp_path, lambda: _texts(), TINY_SMALL_BASE)
    info = json.loads((path / BUILD_INFO).read_text(encoding="utf-8"))
    info["spec"]["steps"] = 1
    (path / BUILD_INFO).write_text(json.dumps(info), encoding="utf-8")

    ensure_small_base(tmp_path, lambda: _texts(), TINY_SMALL_BASE)

    assert len(count_builds) == 2


def test_interrupted_build_leaves_no_valid_looking_directory(tmp_path: Path) -> None:
    def interrupt(step: int, total: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    target = small_base_dir(tmp_path, TINY_SMALL_BASE, text_fingerprint(_texts()))
    with pytest.raises(KeyboardInterrupt):
        ensure_small_base(tmp_path, lambda: _texts(), TINY_SMALL_BASE, progress=interrupt)

    assert not target.exists()
    left = [p.name for p in target.parent.iterdir()] if target.parent.exists() else []
    assert left in ([], [f".{target.name}.lock"])  # at most the (empty, released) build lock
    assert ensure_small_base(tmp_path, lambda: _texts(), TINY_SMALL_BASE) == target
    read_build_info(target)


def test_build_killed_while_saving_leaves_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(directory: Path, info: dict[str, object]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(cache, "write_build_info", crash)
    target = tmp_path / "bases" / "small-x"

    with pytest.raises(OSError, match="disk full"):
        build_small_base(_texts(), target, TINY_SMALL_BASE)

    assert list((tmp_path / "bases").iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_embd", 33),
        ("n_positions", 16),
        ("vocab_size", 100),
        ("steps", 0),
        ("eval_fraction", 0.6),
    ],
)
def test_spec_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        SmallBaseSpec(**{**TINY_SMALL_BASE.to_dict(), field: value})


def test_too_little_text_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        build_small_base(["only one document"], tmp_path / "x", TINY_SMALL_BASE)
    with pytest.raises(DataError):
        build_small_base(["a b", "c d", "e f"], tmp_path / "y", TINY_SMALL_BASE)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
