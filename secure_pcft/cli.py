"""``secure-pcft`` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from secure_pcft.errors import (
    BudgetExhaustedError,
    BudgetInfeasibleError,
    CorruptFileError,
    CryptoError,
    MessageError,
    SecurePcftError,
)
from secure_pcft.plugins import PLUGIN_GROUP, load_plugins
from secure_pcft.third_party import quiet_third_party


def _progress_bar() -> object:
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int, note: str = "") -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, leave=True, file=sys.stderr)
        bar.n = done
        if note:
            bar.set_postfix_str(note, refresh=False)
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _print_table(rows: list[dict[str, object]]) -> None:
    """The result table, aligned whatever the strategy labels' length. ``last`` is each peer's
    last-round model, ``kept`` the model it keeps (best seen on its validation split);
    ``kept/start`` the worst peer's kept test perplexity over its starting point's."""
    cols = [("test ppl (last)", "mean_test_ppl", ".2f"), ("kept", "mean_kept_test_ppl", ".2f"),
            ("worst kept/start", "worst_kept_vs_start", ".3f"), ("test acc", "mean_test_acc", ".3f"),
            ("after warm-up", "mean_test_ppl_after_warmup", ".2f"),
            ("bytes sent", "total_bytes_sent", ",")]  # fmt: skip
    width = max([len("strategy"), *(len(str(r["strategy"])) for r in rows)]) + 2
    print(f"{'strategy':<{width}}" + "".join(f"{h:>{len(h) + 3}}" for h, _, _ in cols))
    for r in rows:
        cells = []
        for h, key, fmt in cols:
            value = r.get(key)
            text = format(value, fmt) if isinstance(value, int | float) else "—"
            cells.append(f"{text:>{len(h) + 3}}")
        print(f"{r['strategy']!s:<{width}}" + "".join(cells))


def cmd_run(args: argparse.Namespace) -> int:
    # Everything that can refuse the run is checked before torch and the model libraries load
    # (seconds of CPU): the config, the output folder, the data.
    from secure_pcft.config import load_config
    from secure_pcft.data.settings import check_unit_data, load_federation
    from secure_pcft.output_dir import refuse_earlier_results, refuse_spent_ledgers

    load_plugins(args.plugin)  # a config may name a plugin's strategy or data source
    cfg = load_config(args.config)
    if args.output:
        cfg = replace(cfg, output=replace(cfg.output, dir=args.output))
    refuse_spent_ledgers(cfg)  # first: a DP run's ledgers are never overwritten, whatever the flag
    if not args.overwrite:
        refuse_earlier_results(Path(cfg.output.dir))
    check_unit_data(cfg.privacy.unit, load_federation(cfg.data))
    from secure_pcft.collab.strategy import make_strategy  # torch, not the model libraries

    make_strategy(cfg.strategy)  # the strategy's own keys: named, typed, in range
    from secure_pcft.run import execute_run

    result = execute_run(cfg, progress=_progress_bar(), new_budget=args.new_budget)  # type: ignore[arg-type]
    _print_table([result.summary()])
    for peer, info in result.extra.get("privacy", {}).items():
        stop = info["stopped_sharing_round"]
        print(
            f"{peer}: ε spent {info['epsilon_spent']:.3f} / budget {info['budget_epsilon']} "
            f"per {info.get('unit', 'block')} "
            f"(δ={info['delta']:.2g}, σ={info['noise_multiplier']:.3g})"
            + (f" — stopped sharing at round {stop}" if stop is not None else "")
        )
    print(f"results: {Path(cfg.output.dir) / 'results.json'}")
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    from secure_pcft.privacy.ledger import read_ledger
    from secure_pcft.privacy.statement import ledger_statement, statement_json

    contents = read_ledger(args.path)  # verifies the hash chain and the high-water mark
    if args.json:
        print(json.dumps(statement_json(contents, str(args.path)), indent=2, allow_nan=False))
        return 0
    g = contents.genesis
    budget = "none (record only)" if g.budget_epsilon is None else f"{g.budget_epsilon:g}"
    print(
        f"ledger {args.path}: peer {g.peer_id}, ε per {g.unit}, δ={g.delta:g}, budget ε={budget}, "
        f"accountant {g.accountant}, created {g.timestamp} — chain verified, "
        f"{len(contents.entries)} events"
    )
    print(
        f"{'#':>4} {'time (UTC)':<19} {'round':>5} {'mechanism':<19} {'σ':>7} {'q':>7} "
        f"{'steps':>5} {'ε event':>8} {'ε total':>8} {'released':<17} to"
    )
    rows = ledger_statement(contents)
    for r in rows:
        e = r.entry.event
        print(
            f"{r.entry.seq:>4} {r.entry.timestamp[:19]:<19} {e.round:>5} {e.mechanism:<19} "
            f"{e.noise_multiplier:>7.3g} {e.sample_rate:>7.3g} {e.steps:>5} "
            f"{r.epsilon_event:>8.4f} {r.epsilon_running:>8.4f} {e.released:<17} "
            f"{','.join(e.recipients)}"
        )
    spent = rows[-1].epsilon_running if rows else 0.0
    left = "" if g.budget_epsilon is None else f", budget left {g.budget_epsilon - spent:.4f}"
    print(f"ε spent (recomputed from the ledger by {g.accountant}): {spent:.4f}{left}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from secure_pcft.run import DEMO_STRATEGIES, compare_strategies, demo_config

    cfg = demo_config(args.output)
    print("secure-pcft demo: 6 peers (parliament speeches in de/es/nl, 2 peers per language),")
    print("LoRA on the toolkit's small English base; the paper's six strategies, calibrated")
    print("predictions and the toolkit's default collaboration branch off one shared warm-up.")
    results = compare_strategies(cfg, DEMO_STRATEGIES, progress=_progress_bar())  # type: ignore[arg-type]
    _print_table([r.summary() for r in results])
    print(f"results and adapters: {cfg.output.dir}/<strategy>/")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from secure_pcft.config import load_config
    from secure_pcft.recipe import search_recipe, write_search

    load_plugins(args.plugin)
    cfg = load_config(args.config)
    search = search_recipe(cfg, args.lr, args.steps, data=args.data, progress=_progress_bar())  # type: ignore[arg-type]
    print(f"{'lr':>10}{'steps':>8}{'mean val ppl':>15}")
    for t in search.trials:
        mark = "  <- chosen" if t is search.chosen else ""
        print(f"{t.lr:>10.3g}{t.steps:>8}{t.mean_val_ppl:>15.2f}{mark}")
    out = args.out or Path(cfg.output.dir) / "recipe.json"
    write_search(search, out)
    chosen = search.chosen
    print(f"chosen on validation ({args.data} data, 0 ε): [train] lr = {chosen.lr:g}, "
          f"{chosen.steps} local steps before the first aggregation (warmup_steps)")  # fmt: skip
    print(f"trials: {out}")
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    load_plugins(args.plugin)
    from secure_pcft.collab.strategy import strategy_catalogue
    from secure_pcft.config import SHARED_STRATEGY_KEYS

    for entry in strategy_catalogue():
        how = (
            ""
            if entry["discovery"] == "none"
            else f" (discovers by {entry['discovery']}"
            + (", encrypted in secure mode)" if entry["encrypted"] else ", plain mode only)")
        )
        print(f"{entry['name']}{how}: {entry['summary']}")
        for opt in entry["options"]:
            default = json.dumps(opt["default"])
            print(f"    {opt['key']} = {default}    ({opt['type']})")
    print(f"every strategy: {', '.join(SHARED_STRATEGY_KEYS)} (README, 'Using it')")
    return 0


def cmd_base(args: argparse.Namespace) -> int:
    from secure_pcft.config import ModelConfig
    from secure_pcft.model.loading import resolve_base_path

    path = resolve_base_path(ModelConfig(base=args.which, cache_dir=args.cache_dir))
    info = path / "build_info.json"
    print(path)
    if info.exists():
        print(json.dumps(json.loads(info.read_text()), indent=2))
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    from secure_pcft.crypto.consortium import key_path, new_identity

    public = new_identity(args.name, args.dir)
    print(f"{public.name} {public.fingerprint}")
    print(f"key file (keep private, mode 0600): {key_path(args.dir, public.name)}")
    return 0


def cmd_keys_roster(args: argparse.Namespace) -> int:
    from secure_pcft.crypto.consortium import ROSTER_FILE, write_roster

    roster = write_roster(args.dir)
    for peer in roster:
        print(f"{peer.name} {peer.fingerprint}")
    print(f"roster: {Path(args.dir) / ROSTER_FILE}")
    return 0


def _plugin_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE",
        help=f"import MODULE (dotted name or .py file; repeatable) first, after every installed "
        f"plugin (entry points '{PLUGIN_GROUP}'): a module that registers {what}",
    )  # fmt: skip


def cmd_audit(args: argparse.Namespace) -> int:
    from secure_pcft.audit.runner import run_campaign_files

    load_plugins(args.plugin)

    results = run_campaign_files(
        args.campaigns,
        args.output,
        base=args.base,
        progress=_progress_bar(),  # type: ignore[arg-type]
    )
    shown_verdict = {"pass": "PASS", "fail": "FAIL", "none": "NO VERDICT (no thresholds set)"}
    for r in results:
        print(f"{r.campaign.name}: {shown_verdict[r.verdict]} ({r.seconds:.0f} s)")
        for a in r.attacks:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in a.metrics.items() if k in _AUDIT_SHOWN)
            note = "" if a.checked else "  (measured only: no thresholds)"
            print(f"  {a.spec.label:<24}{shown}{note}")
            for failure in a.failures:
                print(f"    FAIL {failure}")
    print(f"results: {args.output}/")
    verdicts = {r.verdict for r in results}
    if "fail" in verdicts:
        return EXIT_VERDICT_FAIL
    return EXIT_NO_VERDICT if "none" in verdicts else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from secure_pcft.report import build_report, write_report
    from secure_pcft.report.policy import DEFAULT_POLICY, load_policy

    policy = load_policy(args.policy) if args.policy else DEFAULT_POLICY
    report = build_report(args.run_dir, args.audit, policy)
    json_path, html_path = write_report(report, args.out or Path(args.run_dir) / "report")
    for check in report.checks:
        if check.status != "pass" and check.counts:
            print(f"{check.status.upper():<5} {check.title}: {check.detail}")
    aside = [c for c in report.checks if not c.counts and c.status != "pass"]
    if aside:
        print(f"({len(aside)} audit or control figures beside the verdict: see the report)")
    print(f"verdict: {report.verdict.upper()}")
    print(f"report: {json_path} and {html_path}")
    return 0 if report.verdict == "pass" else 1


_AUDIT_SHOWN = {
    "roc_auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "exposure_bits", "extraction_rate",
    "epsilon_lb", "epsilon", "token_recall", "token_precision",
}  # fmt: skip


# ---- Flower runtime (extra `flower`): see docs/deploying.md -----------------------------------
def cmd_flower_certs(args: argparse.Namespace) -> int:
    from secure_pcft.runtime.flower.deployment import write_tls

    files = write_tls(args.dir, tuple(args.host))
    print(f"CA certificate (give to every site): {files.ca_cert}")
    print(f"SuperLink certificate: {files.server_cert}")
    print(f"SuperLink private key (stays on the relay host, mode 0600): {files.server_key}")
    return 0


def cmd_flower_node_key(args: argparse.Namespace) -> int:
    from secure_pcft.runtime.flower.deployment import write_node_key

    private, public = write_node_key(args.dir, args.name)
    print(f"SuperNode private key (stays on the site, mode 0600): {private}")
    print(f"public key (register it on the SuperLink with `flwr supernode register`): {public}")
    return 0


def cmd_flower_app_dir(args: argparse.Namespace) -> int:
    from secure_pcft.runtime.flower.deployment import APP_DIR

    print(APP_DIR)
    return 0


def cmd_flower_site(args: argparse.Namespace) -> int:
    from secure_pcft.runtime.flower.deployment import SiteLaunch, run_site
    from secure_pcft.runtime.flower.site import SiteSpec

    if args.root_certificates is None and not args.insecure:
        print(
            "error: give --root-certificates (TLS) or, for tests only, --insecure", file=sys.stderr
        )
        return EXIT_USAGE
    launch = SiteLaunch(args.superlink, args.runtime_port, args.root_certificates, args.auth_key)
    spec = SiteSpec(args.site_dir, args.config, args.peer_id, args.key_dir)
    run_site(launch, spec, args.site_dir / "logs")
    return 0


def cmd_flower_simulate(args: argparse.Namespace) -> int:
    from secure_pcft.runtime.flower.simulation import simulate

    result = simulate(args.config, args.output, num_cpus=args.num_cpus)
    _print_table([result["summary"]])
    print(f"results: {args.output / 'results.json'}")
    return 0


def _add_flower_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    flower = sub.add_parser("flower", help="Flower runtime: certificates, keys, sites, simulation")
    fsub = flower.add_subparsers(dest="flower_command", required=True)
    certs = fsub.add_parser(
        "certs", help="write a consortium CA and the SuperLink's TLS certificate"
    )
    certs.add_argument(
        "dir", type=Path, help="folder to write the CA and SuperLink certificates to"
    )
    certs.add_argument(
        "--host", action="append", required=True, help="SuperLink IP/DNS name (repeatable)"
    )
    certs.set_defaults(func=cmd_flower_certs)
    nk = fsub.add_parser("node-key", help="write a SuperNode authentication key pair")
    nk.add_argument("dir", type=Path, help="folder to write the key pair to")
    nk.add_argument("name", help="the SuperNode's name (file stem of the key pair)")
    nk.set_defaults(func=cmd_flower_node_key)
    ad = fsub.add_parser("app-dir", help="print the Flower app directory for `flwr run`")
    ad.set_defaults(func=cmd_flower_app_dir)
    site = fsub.add_parser("site", help="run this site: its SuperNode and its ClientApp host")
    site.add_argument("--superlink", required=True, help="SuperLink address host:port")
    site.add_argument("--root-certificates", type=Path, help="consortium CA certificate (TLS)")
    site.add_argument("--insecure", action="store_true", help="no TLS (local tests only)")
    site.add_argument("--auth-key", type=Path, help="SuperNode private authentication key")
    site.add_argument("--runtime-port", type=int, default=9094, help="SuperNode Runtime API port")
    site.add_argument("--site-dir", type=Path, required=True)
    site.add_argument("--config", type=Path, required=True, help="the consortium's run TOML")
    site.add_argument("--peer-id", required=True)
    site.add_argument("--key-dir", type=Path, help="<peer-id>.key and roster.json")
    site.set_defaults(func=cmd_flower_site)
    sim = fsub.add_parser("simulate", help="run a config on Flower's simulation engine (Ray)")
    sim.add_argument("config", type=Path, help="the run's TOML config")
    sim.add_argument("--output", type=Path, default=Path("runs/flower-simulation"))
    sim.add_argument("--num-cpus", type=int, default=2, help="CPUs Ray may use")
    sim.set_defaults(func=cmd_flower_simulate)


def _version() -> str:
    try:
        return importlib.metadata.version("secure-pcft")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "unknown"


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``-v`` after any subcommand too (``secure-pcft run x.toml -v``), not only before it.

    The subcommands' copies default to SUPPRESS, so they never reset a ``-v`` given up front.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                child.add_argument(
                    "-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                    help="log at INFO level",
                )  # fmt: skip
                _verbose_everywhere(child)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="secure-pcft",
        description=__doc__,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    p.add_argument("--version", action="version", version=f"secure-pcft {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a collaboration from a TOML config")
    run.add_argument("config", type=Path, help="the run's TOML config (README, 'Using it')")
    run.add_argument("--output", help="override [output] dir")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier run in the output folder (never its privacy "
        "ledgers: a DP run into a folder with ledgers is refused regardless)",
    )
    run.add_argument(
        "--new-budget",
        default="",
        metavar="REASON",
        help="start a fresh privacy budget for every site's training data although earlier runs "
        "spent from it (DP runs draw from the site's budget store otherwise); the reason is "
        "recorded in the store and results and shown on the compliance report",
    )
    _plugin_option(run, "strategies, data sources or accountants the config names")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser(
        "demo",
        help="the paper's six strategies + calibrated predictions on the embedded corpus",
        description=(
            "6 peers (ParlSpeech samples of Bundestag, Congreso and Tweede Kamer speeches: de/es/nl, "
            "2 peers per language) fine-tune LoRA adapters on the toolkit's small English base "
            "(built and cached on first use, ~4 min on 2 cores); local, fedavg, oracle, weights, "
            "predictions, validation and predictions-calibrated branch off one shared warm-up "
            "(shared-init mode, 30 warm-up steps, 3 rounds of 10; plain mode, no DP). Prints test "
            "perplexity per strategy; ~3-4 min with a cached base on 2 cores."
        ),
    )
    demo.add_argument("--output", default="runs/demo", help="results folder (default runs/demo)")
    demo.set_defaults(func=cmd_demo)

    ledger = sub.add_parser(
        "ledger",
        help="verify a peer's privacy ledger and print its events",
        description=(
            "Verify a peer's ledger (hash chain and high-water mark) and print every event with its "
            "time, its own ε and the running ε (the composition up to it, by the ledger's "
            "accountant). Exit 4 if the ledger fails verification."
        ),
    )
    ledger.add_argument("path", type=Path, help="the ledger file, <ledger_dir>/<peer>.ledger.jsonl")
    ledger.add_argument(
        "--json", action="store_true", help="print the statement as one JSON object"
    )
    ledger.set_defaults(func=cmd_ledger)

    tune = sub.add_parser(
        "tune",
        help="choose the learning rate and steps on validation (every site alone; 0 ε)",
        description="Train every site alone with each learning rate and score its validation "
        "split after each checkpoint; the recipe with the lowest mean validation perplexity is "
        "chosen. Test splits are never read. --data public tunes on the public reference set "
        "(0 ε, also under DP); --data private only without DP (secure_pcft/recipe.py).",
    )
    tune.add_argument("config", type=Path, help="the run's TOML configuration")
    tune.add_argument("--lr", type=float, nargs="+", required=True, help="learning rates to try")
    tune.add_argument("--steps", type=int, nargs="+", required=True,
                      help="checkpoints (local steps) at which validation is scored")  # fmt: skip
    tune.add_argument("--data", choices=["private", "public"], default="private")
    tune.add_argument("--out", type=Path, help="JSON of the trials (default <output>/recipe.json)")
    _plugin_option(tune, "strategies or data sources the config names")
    tune.set_defaults(func=cmd_tune)

    strategies = sub.add_parser(
        "strategies", help="list the trust strategies and each one's own [strategy] keys"
    )
    _plugin_option(strategies, "strategies to list beside the built-in ones")
    strategies.set_defaults(func=cmd_strategies)

    base = sub.add_parser("base", help="build (or find) a ready base model and print its path")
    base.add_argument(
        "which",
        choices=["small", "smollm2"],
        help="small: the toolkit's 2.7M GPT-2 (built on first use); smollm2: SmolLM2-135M",
    )
    base.add_argument("--cache-dir", default="~/.cache/secure-pcft")
    base.set_defaults(func=cmd_base)

    keys = sub.add_parser("keys", help="peer identities and the consortium roster")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="generate NAME.key (0600) and NAME.pub.json")
    new.add_argument("name", help="the peer's id as in the run config (e.g. plant-a)")
    new.add_argument("--dir", type=Path, required=True, help="key directory")
    new.set_defaults(func=cmd_keys_new)
    roster = keys_sub.add_parser("roster", help="pin every *.pub.json of DIR into DIR/roster.json")
    roster.add_argument("dir", type=Path, help="key directory holding the *.pub.json files")
    roster.set_defaults(func=cmd_keys_roster)

    audit = sub.add_parser("audit", help="run audit campaigns (TOML) and write results JSON")
    audit.add_argument(
        "campaigns", type=Path, nargs="+", metavar="CAMPAIGN.toml", help="campaign files (audits/)"
    )
    audit.add_argument("--output", default="audits/results", help="results directory")
    audit.add_argument("--base", help="override [target.model] base of every campaign")
    _plugin_option(audit, "attacks (secure_pcft.audit.register_attack), usable by name in "
                   "[[attacks]]")  # fmt: skip
    audit.set_defaults(func=cmd_audit)

    report = sub.add_parser(
        "report", help="compliance report of a run directory: report.json + report.html"
    )
    report.add_argument(
        "run_dir",
        type=Path,
        metavar="RUN_DIR",
        help="a run's output folder (results.json, ledgers/)",
    )
    report.add_argument(
        "--audit",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="an audit result JSON of 'secure-pcft audit' (repeatable)",
    )
    report.add_argument(
        "--policy",
        type=Path,
        metavar="TOML",
        help="the review policy the run is judged by (default: the documented default policy, "
        "examples/review_policy.toml); PASS means inside it",
    )
    report.add_argument("--out", type=Path, help="output directory (default RUN_DIR/report)")
    report.set_defaults(func=cmd_report)
    _add_flower_commands(sub)
    _verbose_everywhere(p)
    return p


# Exit codes, one per meaning (README "Exit codes"; `secure-pcft --help`).
EXIT_OK = 0  # done; a report or audit verdict PASS
EXIT_VERDICT_FAIL = 1  # the compliance report's or an audit campaign's verdict is FAIL
EXIT_USAGE = 2  # the command line itself is wrong (argparse)
EXIT_BAD_INPUT = (
    3  # invalid config, data, model, campaign or report input (ConfigError, DataError ...)
)
EXIT_INTEGRITY = 4  # a ledger, key file or message failed verification (tampered or corrupt)
EXIT_BUDGET = 5  # the privacy budget cannot be met or is exhausted
EXIT_NO_VERDICT = 6  # an audit campaign measured but set no thresholds: nothing was judged
EXIT_INTERNAL = 70  # a bug: an unexpected exception (traceback printed)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT): what was kept is printed, nothing is half-written
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the output's reader closed it (`secure-pcft ... | head`)

EXIT_CODES_HELP = """exit codes:
  0   done (report / audit verdict PASS)
  1   report or audit verdict FAIL
  2   usage error (bad command line)
  3   invalid input: config, data, model, campaign, report files
  4   integrity failure: a tampered or corrupt ledger, key file or message
  5   privacy budget infeasible or exhausted
  6   audit campaign without thresholds: measured only, no verdict
  70  internal error (unexpected exception; please report it)
  130 interrupted (Ctrl-C): one line says what was kept
  141 the output's reader closed it (e.g. piped into head)"""


def _what_was_kept(args: argparse.Namespace) -> str:
    """One line for Ctrl-C: files are written atomically, so what exists is whole."""
    if getattr(args, "func", None) is cmd_run:
        from secure_pcft.config import load_config

        try:
            out = Path(args.output or load_config(args.config).output.dir)
        except SecurePcftError:
            return "nothing was written"
        ledgers = sorted(out.glob("**/*.ledger.jsonl"))
        if ledgers:
            return (f"{len(ledgers)} privacy ledgers in {out} record what was released (verified, "
                    f"reportable: secure-pcft report {out}); no results were written")  # fmt: skip
        return f"no results were written ({out} holds only the run's configuration, if anything)"
    return "nothing half-written (every file is written whole or not at all)"


def exit_code(exc: SecurePcftError) -> int:
    """The documented exit code of a toolkit error."""
    if isinstance(exc, BudgetExhaustedError | BudgetInfeasibleError):
        return EXIT_BUDGET
    if isinstance(exc, CorruptFileError | MessageError | CryptoError):
        return EXIT_INTEGRITY
    return EXIT_BAD_INPUT


class _AboveTheBars(logging.Handler):
    """Log lines printed with ``tqdm.write`` so they land above the progress bars, never glued to
    the end of a bar's line."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _AboveTheBars()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    progress = logging.getLogger(
        "secure_pcft.progress"
    )  # long first-use work, shown as plain lines
    progress.setLevel(logging.INFO)
    progress.propagate = False
    plain = _AboveTheBars()
    plain.setFormatter(logging.Formatter("%(message)s"))
    progress.handlers = [plain]
    if not args.verbose:
        quiet_third_party()
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not as a warning at interpreter exit
        return code
    except KeyboardInterrupt:
        print(f"\ninterrupted: {_what_was_kept(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`... | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return EXIT_BROKEN_PIPE
    except SecurePcftError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exit_code(exc)
    except Exception:  # a bug, not bad input: say so, with the traceback
        traceback.print_exc()
        print("internal error: please report it with the traceback above", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
