"""Checks on a run's output folder, before anything heavy loads (``secure-pcft run`` calls them
right after the config): an earlier run's results are never overwritten silently, and a DP run
never writes into ledgers that already hold an earlier run's spend."""

from __future__ import annotations

from pathlib import Path

from secure_pcft.config import RunConfig
from secure_pcft.errors import ConfigError


def refuse_earlier_results(output_dir: Path) -> None:
    """Refuse to write over an earlier run's ``results.json`` (``secure-pcft run --overwrite`` allows it).

    Raises:
        ConfigError: ``output_dir`` (or a strategy folder in it) already holds a ``results.json``.
    """
    found = sorted(output_dir.glob("results.json")) + sorted(output_dir.glob("*/results.json"))
    if found:
        raise ConfigError(
            f"[output] dir: {output_dir} already holds the results of an earlier run "
            f"({found[0]}); --overwrite replaces them (a separate run goes to its own --output; "
            "under DP, the site's budget store counts every run on the same data)"
        )


def refuse_spent_ledgers(cfg: RunConfig) -> None:
    """Refuse a DP run whose output or ledger folder already holds ledgers of an earlier run.

    Their spent ε would block every release, so the run would quietly become local-only and
    overwrite the earlier results; an earlier run's ledgers stay as they are. (A run into another
    folder on the same data draws from the same budget: the site's budget store counts it.)

    Raises:
        ConfigError: a ``*.ledger.jsonl`` exists under the output dir or ``[privacy] ledger_dir``.
    """
    if not cfg.privacy.enabled:
        return
    roots = [Path(cfg.output.dir)] + (
        [Path(cfg.privacy.ledger_dir)] if cfg.privacy.ledger_dir else []
    )
    for root in roots:
        found = sorted(root.glob("**/*.ledger.jsonl")) if root.is_dir() else []
        if found:
            interrupted = not (root / "results.json").exists() and (root / "run.json").exists()
            why = (
                "an interrupted run's ledgers: it cannot be resumed (its DP-SGD and optimiser "
                "state is not kept between rounds), and its spend stands"
                if interrupted
                else "an earlier run's ledgers"
            )
            raise ConfigError(
                f"[output] dir / [privacy] ledger_dir: {root} holds {why} ({found[0].name}, ...). "
                "A new run on the same data spends a budget that this data has partly spent "
                "already: the ledgers stay as they are, and `secure-pcft report "
                f"{root}` states what they hold."
            )
