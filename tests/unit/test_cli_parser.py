"""The command line: -v anywhere, every positional argument documented in --help."""

from __future__ import annotations

import argparse

import pytest

from secure_pcft.cli import build_parser


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["-v", "ledger", "x.jsonl"], True),
        (["ledger", "x.jsonl", "-v"], True),  # was: "unrecognized arguments: -v"
        (["ledger", "--verbose", "x.jsonl"], True),
        (["keys", "new", "plant-a", "--dir", "k", "-v"], True),
        (["ledger", "x.jsonl"], False),
    ],
)
def test_verbose_is_accepted_before_and_after_the_subcommand(
    argv: list[str], verbose: bool
) -> None:
    assert build_parser().parse_args(argv).verbose is verbose


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                out += _parsers(child)
    return out


def test_every_positional_argument_has_help() -> None:
    missing = [
        f"{p.prog} {a.dest}"
        for p in _parsers(build_parser())
        for a in p._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction) and not a.help
    ]

    assert missing == []
