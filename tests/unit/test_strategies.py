"""Trust strategies against hand-computed examples (the paper's formulas)."""

from __future__ import annotations

import math
from typing import Literal

import pytest
import torch

from secure_pcft.collab.strategies.predictions import prediction_signature, signature_distance
from secure_pcft.collab.strategies.weights import rowwise_cosine
from secure_pcft.collab.strategy import (
    TrustContext,
    TrustStrategy,
    available_strategies,
    make_strategy,
    register_strategy,
    select_and_softmax,
    strategy_from_label,
    strategy_label,
)
from secure_pcft.config import StrategyConfig
from secure_pcft.errors import ConfigError, StrategyError

IDS = ("p0", "p1", "p2")


def ctx(**kw: object) -> TrustContext:
    return TrustContext(self_index=0, peer_ids=IDS, **kw)  # type: ignore[arg-type]


def test_registry_lists_the_six_builtins() -> None:
    assert set(available_strategies()) >= {
        "local",
        "fedavg",
        "oracle",
        "weights",
        "predictions",
        "validation",
    }


def test_registry_refuses_silent_overwrite() -> None:
    class Fake(TrustStrategy):
        name = "fedavg"

        def row(self, ctx: TrustContext) -> torch.Tensor:
            return torch.ones(1)

    with pytest.raises(ConfigError):
        register_strategy(Fake)


def test_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown strategy"):
        make_strategy(StrategyConfig(name="nope"))


def test_local_and_fedavg_rows() -> None:
    assert make_strategy(StrategyConfig(name="local")).row(ctx()).tolist() == [1.0, 0.0, 0.0]
    row = make_strategy(StrategyConfig(name="fedavg")).row(ctx())
    assert torch.allclose(row, torch.full((3,), 1 / 3, dtype=torch.float64))


def test_oracle_uses_dot_product_of_mixes() -> None:
    mixes = ({"de": 0.75, "fr": 0.25}, {"de": 1.0}, {"fr": 0.75, "it": 0.25})
    row = make_strategy(StrategyConfig(name="oracle")).row(ctx(domain_mixes=mixes))
    raw = [0.75**2 + 0.25**2, 0.75, 0.25 * 0.75]
    assert torch.allclose(row, torch.tensor(raw, dtype=torch.float64) / sum(raw))


def test_oracle_without_mixes_fails_loudly() -> None:
    with pytest.raises(StrategyError):
        make_strategy(StrategyConfig(name="oracle")).row(ctx())


def test_rowwise_cosine_hand_example() -> None:
    a = {"x": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    b = {"x": torch.tensor([[1.0, 0.0], [1.0, 0.0]])}
    # row 0: cos = 1; row 1: cos = 0 → mean 0.5
    assert rowwise_cosine(a, b) == pytest.approx(0.5)


def test_weights_strategy_is_softmax_of_cosines() -> None:
    a = {"x": torch.tensor([[1.0, 0.0]])}
    b = {"x": torch.tensor([[0.0, 1.0]])}
    c = {"x": torch.tensor([[-1.0, 0.0]])}
    row = make_strategy(StrategyConfig(name="weights")).row(ctx(adapters={0: a, 1: b, 2: c}))
    expected = torch.softmax(torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64), 0)
    assert torch.allclose(row, expected)


def test_signature_distance_counts_entries_outside_the_other_top_k() -> None:
    a = {"indices": torch.tensor([[0, 1]]), "values": torch.tensor([[2.0, 1.0]])}
    b = {"indices": torch.tensor([[0, 2]]), "values": torch.tensor([[1.0, 3.0]])}
    # dense a = [2, 1, 0], b = [1, 0, 3] → L1 = 1 + 1 + 3 = 5
    assert signature_distance(a, b) == pytest.approx(5.0)


def test_predictions_strategy_paper_rule() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0, 0.0]])
    sigs = {
        0: prediction_signature(logits, top_k=2),
        1: prediction_signature(logits + torch.tensor([[0.0, 0.5, 0.0, 0.0]]), top_k=2),
        2: prediction_signature(torch.tensor([[0.0, 0.0, 3.0, 1.0]]), top_k=2),
    }
    d = torch.tensor(
        [0.0, signature_distance(sigs[0], sigs[1]), signature_distance(sigs[0], sigs[2])]
    )
    expected = torch.softmax(-10 * d / d.sum(), 0).to(torch.float64)
    row = make_strategy(StrategyConfig(name="predictions")).row(ctx(signatures=sigs))
    assert torch.allclose(row, expected)
    assert row[0] > row[1] > row[2]


def test_predictions_calibrated_sharpens_a_clear_group_structure() -> None:
    # 9 peers, 3 groups: distances 0 within the group, 1 across (perfect separation).
    n = 9
    base = torch.eye(3)
    sigs = {
        j: {"indices": torch.tensor([[0, 1, 2]]), "values": base[j % 3].unsqueeze(0) * 5}
        for j in range(n)
    }
    c = TrustContext(self_index=0, peer_ids=tuple(f"p{i}" for i in range(n)), signatures=sigs)
    paper = make_strategy(StrategyConfig(name="predictions")).row(c)
    calibrated = make_strategy(
        StrategyConfig(name="predictions", options={"calibrated": True})
    ).row(c)
    in_group = [0, 3, 6]
    # the paper's rule caps the in-group mass (docs/design.md: ≈0.73 for 9 peers / 3 groups)
    assert float(paper[in_group].sum()) == pytest.approx(0.73, abs=0.01)
    assert float(calibrated[in_group].sum()) > 0.95


def test_predictions_calibrated_hand_example_standardises_over_others_only() -> None:
    # self (peer 0) at distance 0; others at 1, 1, 3, 3 → mean 2, std 1 over the others
    logits = {0: [0.0], 1: [1.0], 2: [1.0], 3: [3.0], 4: [3.0]}
    sigs = {
        j: {"indices": torch.tensor([[0]]), "values": torch.tensor([v])} for j, v in logits.items()
    }
    c = TrustContext(self_index=0, peer_ids=tuple(f"p{i}" for i in range(5)), signatures=sigs)
    row = make_strategy(StrategyConfig(name="predictions", options={"calibrated": True})).row(c)
    z_close, z_far = -1.0, 1.0
    scores = torch.tensor([z_close, z_close, z_close, z_far, z_far], dtype=torch.float64) * -4.0
    assert torch.allclose(row, torch.softmax(scores, 0))
    # self weighs the same as its closest peers: the rule does not collapse to ``local``
    assert float(row[0]) == pytest.approx(float(row[1]))
    assert float(row[0]) < 0.5


def test_validation_strategy_softmax_of_negative_perplexity() -> None:
    states = {j: {"x": torch.full((1,), float(j))} for j in range(3)}
    ppl = {0.0: 10.0, 1.0: 11.0, 2.0: 14.0}
    c = ctx(adapters=states, validation_perplexity=lambda s: ppl[float(s["x"][0])])
    row = make_strategy(StrategyConfig(name="validation")).row(c)
    assert torch.allclose(
        row, torch.softmax(-torch.tensor([10.0, 11.0, 14.0], dtype=torch.float64), 0)
    )


def test_calibrated_validation_does_not_depend_on_the_perplexity_scale() -> None:
    """The paper's T = 1 is a hard argmin at perplexities in the hundreds; the calibrated rule
    standardises the peer's own scores, so scaling every perplexity by 10 (another base) or
    shifting them leaves the row unchanged, and a 3-of-5 group shares the weight."""
    states = {j: {"x": torch.full((1,), float(j))} for j in range(5)}

    def row_for(ppl: list[float], **opts: object) -> torch.Tensor:
        c = TrustContext(
            self_index=0, peer_ids=tuple("abcde"), adapters=states,
            validation_perplexity=lambda s: ppl[int(s["x"][0])],
        )  # fmt: skip
        return make_strategy(StrategyConfig(name="validation", options=dict(opts))).row(c)

    ppl = [360.0, 362.0, 365.0, 420.0, 430.0]  # self + two of its group, two of another
    paper = row_for(ppl)
    assert float(paper[0]) > 0.85  # argmin: nearly all weight on the lowest perplexity
    cal = row_for(ppl, calibrated=True)
    assert torch.allclose(cal, row_for([10 * p for p in ppl], calibrated=True))
    assert torch.allclose(cal, row_for([p - 300 for p in ppl], calibrated=True))
    assert float(cal[:3].sum()) > 0.95 and all(float(w) > 0.2 for w in cal[:3])
    z = (torch.tensor(ppl, dtype=torch.float64) - sum(ppl) / 5) / torch.tensor(ppl).double().std(
        unbiased=False
    )
    assert torch.allclose(cal, torch.softmax(-4.0 * z, 0))
    assert torch.allclose(row_for([7.0] * 5, calibrated=True), torch.full((5,), 0.2).double())


def test_calibrated_is_refused_where_no_strategy_reads_it() -> None:
    with pytest.raises(ConfigError, match=r"'weights' has no key.*calibrated"):
        make_strategy(StrategyConfig(name="weights", options={"calibrated": True}))
    assert strategy_from_label("validation-calibrated-cand4") == StrategyConfig(
        name="validation", options={"calibrated": True, "candidates": 4}
    )


def test_validation_candidates_score_only_the_closest_adapters_by_weight_cosine() -> None:
    own = torch.tensor([[1.0, 0.0]])
    directions = {0: own, 1: torch.tensor([[0.0, 1.0]]), 2: torch.tensor([[1.0, 0.1]])}
    directions[3] = torch.tensor([[-1.0, 0.2]])
    states = {j: {"x": t} for j, t in directions.items()}
    scored: list[int] = []

    def ppl(state: dict[str, torch.Tensor]) -> float:
        j = next(k for k, v in states.items() if v is state)
        scored.append(j)
        return 10.0 + j

    strategy = make_strategy(StrategyConfig(name="validation", options={"candidates": 2}))
    row = strategy.row(
        TrustContext(
            self_index=0, peer_ids=("a", "b", "c", "d"), adapters=states, validation_perplexity=ppl
        )
    )

    assert sorted(scored) == [0, 2]  # self and the one with the highest row cosine (peer 2)
    assert float(row[1]) == 0.0 and float(row[3]) == 0.0
    assert torch.allclose(row[[0, 2]], torch.softmax(-torch.tensor([10.0, 12.0]).double(), 0))
    assert strategy.private_scores(held=9) == 2  # the DP plan reserves 2 scores, not 9
    relative = make_strategy(
        StrategyConfig(name="validation", options={"candidates": 3, "relative": True})
    )
    assert relative.private_scores(held=9) == 2  # own gap is 0 by definition, not a query


def test_validation_candidates_options_are_checked_and_labelled() -> None:
    cfg = StrategyConfig(name="validation", temperature=10.0, options={"candidates": 4})
    assert strategy_label(cfg) == "validation-t10-cand4"
    assert strategy_from_label(strategy_label(cfg)) == cfg
    for name, n in (("validation", 1), ("weights", 3)):
        with pytest.raises(ConfigError, match="candidates"):
            make_strategy(StrategyConfig(name=name, options={"candidates": n}))


def test_top_k_and_threshold_keep_self() -> None:
    s = torch.tensor([0.0, 5.0, 4.0, -1.0], dtype=torch.float64)
    row = select_and_softmax(s, self_index=0, top_k=2)
    assert row[0] > 0 and row[1] > 0 and row[2] == 0 and row[3] == 0
    assert math.isclose(float(row.sum()), 1.0)
    row = select_and_softmax(s, self_index=3, threshold=4.5)
    assert row[3] > 0 and row[1] > 0 and row[0] == 0 and row[2] == 0


def test_temperature_flattens_the_row() -> None:
    a = {"x": torch.tensor([[1.0, 0.0]])}
    b = {"x": torch.tensor([[-1.0, 0.0]])}
    states = {0: a, 1: b, 2: a}
    hot = make_strategy(StrategyConfig(name="weights", temperature=10.0)).row(ctx(adapters=states))
    cold = make_strategy(StrategyConfig(name="weights", temperature=0.1)).row(ctx(adapters=states))
    assert float(hot[1]) > float(cold[1])


def test_strategy_labels_name_the_options_that_differ_from_the_paper() -> None:
    assert strategy_label(StrategyConfig(name="predictions")) == "predictions"
    assert (
        strategy_label(StrategyConfig(name="predictions", options={"calibrated": True}))
        == "predictions-calibrated"
    )
    assert (
        strategy_label(StrategyConfig(name="validation", temperature=50.0, top_k=3, threshold=0.1))
        == "validation-t50-top3-thr0.1"
    )


def test_comparing_two_strategies_with_one_label_is_refused_before_any_work() -> None:
    from secure_pcft.config import RunConfig
    from secure_pcft.errors import ConfigError
    from secure_pcft.run import compare_strategies

    same = [StrategyConfig(name="fedavg"), StrategyConfig(name="fedavg")]
    with pytest.raises(ConfigError, match="must differ"):
        compare_strategies(RunConfig(), same)


@pytest.mark.parametrize(
    "cfg",
    [
        StrategyConfig(name="predictions"),
        StrategyConfig(name="predictions", options={"calibrated": True}),
        StrategyConfig(name="validation", temperature=50.0, top_k=3),
        StrategyConfig(name="weights", temperature=0.5, threshold=-0.25),
    ],
)
def test_a_label_parses_back_to_its_strategy(cfg: StrategyConfig) -> None:
    assert strategy_from_label(strategy_label(cfg)) == cfg


def test_a_label_part_that_is_no_option_of_its_strategy_is_refused() -> None:
    with pytest.raises(ConfigError, match="'tx' is no option of 'validation'"):
        strategy_from_label("validation-tx")
    with pytest.raises(ConfigError, match="'cand4' is no option of 'weights'"):
        strategy_from_label("weights-cand4")  # another strategy's option
    with pytest.raises(ConfigError, match="unknown strategy"):
        strategy_from_label("nosuch-t2")
    with pytest.raises(ConfigError, match="temperature"):
        strategy_from_label("validation-t0")


def test_a_strategys_own_options_are_typed_labelled_and_parsed_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The peft pattern: a strategy's keys are a dataclass next to it; its label parts round-trip,
    negative numbers included, and a declaration that would make labels ambiguous is refused."""
    from dataclasses import dataclass

    import secure_pcft.collab.strategy as strategy_module
    from secure_pcft.collab.strategy import StrategyOptions, option
    from secure_pcft.registry import RegistryError

    available_strategies()  # built-ins in; this test's registrations go to a copy
    monkeypatch.setattr(strategy_module, "_REGISTRY", dict(strategy_module._REGISTRY))

    @dataclass(frozen=True)
    class ShiftOptions(StrategyOptions):
        bias: float = option(0.0, label="bias")
        rounds: int = option(1, label="r", late=True)
        mode: Literal["soft", "hard"] = option("soft", values={"hard": "hard"})

    class Shifted(TrustStrategy):
        """Test only: every peer's row is uniform; the options only name it."""

        name = "shifted-test"
        Options = ShiftOptions

        def row(self, ctx: TrustContext) -> torch.Tensor:
            return torch.full((ctx.num_peers,), 1.0 / ctx.num_peers, dtype=torch.float64)

    register_strategy(Shifted, force=True)
    cfg = StrategyConfig(
        name="shifted-test", top_k=2, options={"bias": -0.5, "rounds": -3, "mode": "hard"}
    )
    assert strategy_label(cfg) == "shifted-test-biasm0.5-hard-top2-rm3"
    assert strategy_from_label(strategy_label(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"expected one of 'soft', 'hard'"):
        make_strategy(StrategyConfig(name="shifted-test", options={"mode": "medium"}))
    with pytest.raises(ConfigError, match=r"expected an integer"):
        make_strategy(StrategyConfig(name="shifted-test", options={"rounds": 1.5}))

    for bad_field, message in (
        ("temperature: float = option(1.0, label='heat')", "is a shared key"),
        ("note: str = option('x', label='note')", "must be a bool, an int, a float"),
        ("tau: float = option(1.0, label='tau')", "does not start with a shared one"),
        ("plain: int = 3", "declare it with collab.strategy.option"),
    ):
        namespace: dict[str, object] = {}
        exec(  # a class body per case: the declaration is what is under test
            "from dataclasses import dataclass\n"
            "from secure_pcft.collab.strategy import StrategyOptions, option\n"
            f"@dataclass(frozen=True)\nclass Bad(StrategyOptions):\n    {bad_field}\n",
            namespace,
        )
        bad = type("BadRule", (Shifted,), {"name": "bad-rule-test", "Options": namespace["Bad"]})
        with pytest.raises(RegistryError, match=message):
            register_strategy(bad)
