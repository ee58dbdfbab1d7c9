"""Shared fixtures: a tiny random GPT-2 base with its own tokenizer, and a tiny 3-peer federation.

The tiny model is a stand-in for speed only: tests that make claims about the method's *quality*
live in tests/slow and the benchmarks; these fixtures exercise the real peft/transformers code paths.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from secure_pcft.config import StrategyConfig
from secure_pcft.data.corpus import Federation, PeerCorpus
from secure_pcft.model.loading import BaseModel, load_base

EOS = "<|endoftext|>"

# Tiny models gain nothing from intra-op threads, and oversubscribed threads are slow on CI boxes.
torch.set_num_threads(1)

_WORDS = {
    "a": "the plant runs the line and the pump moves water to the tank every hour".split(),
    "b": "der kessel heizt das wasser und die pumpe bringt es in den tank am morgen".split(),
    "c": "la machine coupe le bois et le moteur tourne vite dans la salle du fond".split(),
}


def _sentences(domain: str, n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    words = _WORDS[domain]
    out = []
    for _ in range(n):
        idx = torch.randint(
            len(words), (int(torch.randint(6, 12, (1,), generator=g)),), generator=g
        )
        out.append(" ".join(words[int(i)] for i in idx))
    return out


def load_script(path: Path, name: str) -> ModuleType:
    """Import a script that is not a package module (e.g. under benchmarks/) by its file path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_tiny_base(directory: Path, arch: str = "gpt2") -> Path:
    """A byte-level BPE tokenizer and a 2-layer, 32-wide GPT-2 (random weights), saved as HF dir;
    ``arch="llama"``: the same tokenizer with a 2-layer, 32-wide Llama (SmolLM2's architecture)."""
    texts = [s for d in _WORDS for s in _sentences(d, 50, 1)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS, unk_token=EOS
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = GPT2Config(
            vocab_size=len(fast),
            n_positions=64,
            n_embd=32,
            n_layer=2,
            n_head=2,
            bos_token_id=fast.eos_token_id,
            eos_token_id=fast.eos_token_id,
        )
        model = GPT2LMHeadModel(cfg)
        if arch == "llama":
            llama = LlamaConfig(
                vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id,
                pad_token_id=fast.eos_token_id,
            )  # fmt: skip
            model = LlamaForCausalLM(llama)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_base(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture()
def tiny_base(tiny_base_dir: Path) -> BaseModel:
    return load_base(tiny_base_dir)


def quick_strategy(name: str, **shared: Any) -> StrategyConfig:
    """Strategy ``name`` as tests run it: one public reference batch a round where it compares
    prediction signatures (``predictions``), otherwise its defaults."""
    options = {"reference_batches": 1} if name == "predictions" else {}
    return StrategyConfig(name=name, options=options, **shared)


def tiny_federation(num_peers: int = 3, docs: int = 24) -> Federation:
    """Peers whose domain is peer index mod 3 (a, b, c), with disjoint random sentences."""
    domains = ("a", "b", "c")
    peers = []
    for i in range(num_peers):
        d = domains[i % 3]
        s = _sentences(d, docs + 16, seed=100 + i)
        peers.append(
            PeerCorpus(
                f"peer-{i}",
                tuple(s[:docs]),
                tuple(s[docs : docs + 8]),
                tuple(s[docs + 8 :]),
                {d: 1.0},
            )
        )
    reference = tuple(x for d in domains for x in _sentences(d, 8, seed=999))
    return Federation(tuple(peers), reference, domains, "tiny synthetic test federation")


@pytest.fixture()
def federation() -> Federation:
    return tiny_federation()


@pytest.fixture(autouse=True)
def _budget_store(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test its own site budget store (privacy/budget_store.py), never the user's: runs on
    the same tiny data in different tests must not draw from one budget."""
    monkeypatch.setenv("SECURE_PCFT_BUDGET_STORE", str(tmp_path_factory.mktemp("budgets")))
