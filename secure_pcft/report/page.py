"""The compliance report as one self-contained HTML page, rendered from ``report.json`` alone.

No script, no external resource of any kind (a Content-Security-Policy of ``default-src 'none'``
makes the browser enforce it), inline CSS and inline SVG plots. Every string from the document is
escaped (:func:`~secure_pcft.report.plots.esc`): peer ids, labels and error messages come from files
a reviewer does not control.

Plot element ids (stable, for tools and tests): ``plot-epsilon`` (ε over rounds per peer against
the budget), ``plot-trust-final`` and ``plot-trust-round-<r>`` (trust matrices), ``plot-roc-<i>``
and ``plot-roc-log-<i>`` (ROC curves of audit ``i``, linear and log–log axes).
"""

from __future__ import annotations

import json
import math
from typing import Any

from secure_pcft.report.plots import Series, colour, esc, heatmap, line_chart

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1a1a1a;line-height:1.4}
h1{font-size:24px;margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-size:22px;font-weight:700;padding:12px 16px;border-radius:6px;margin:12px 0}
.v-pass{background:#e3f4e8;color:#0b5d1e;border:2px solid #0b5d1e}
.v-fail{background:#fde4e1;color:#8a1105;border:2px solid #8a1105}
.alert{background:#8a1105;color:#fff;padding:10px 14px;border-radius:6px;margin:8px 0;font-weight:600}
.s-pass{color:#0b5d1e;font-weight:700}.s-warn{color:#8a5a00;font-weight:700}
.s-fail{color:#fff;background:#b3261e;font-weight:700;padding:0 4px;border-radius:3px}
code,pre{font-family:ui-monospace,monospace;font-size:12px}pre{background:#f6f6f6;padding:8px;overflow:auto}
.muted{color:#666;font-size:12px}.plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.print-only{display:none}
@media print{body{margin:0;max-width:none;font-size:11px}details.fold{display:none}
.print-only{display:block}h2{break-after:avoid}table,svg,.verdict{break-inside:avoid}
pre{white-space:pre-wrap;overflow:visible}}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def _num(x: Any, fmt: str = ".4g") -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return esc("∞" if x == "inf" else x)
    return format(x, fmt)


def _real(x: Any) -> float:
    return math.nan if x is None else float(x)  # "inf" / "nan" strings parse as floats


def _status(s: str) -> str:
    return f'<span class="s-{esc(s)}">{esc(s.upper())}</span>'


def _ledger_status(status: str) -> str:
    """A ledger's state in the privacy table: a run without DP has none to verify (neutral; the
    run's DP check carries the verdict), anything but a verified ledger is a failure."""
    if status == "verified":
        return _status("pass") + " verified"
    if status == "not-applicable":
        return "— (no DP: no ledger)"
    return _status("fail") + " " + esc(status)


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """``rows`` are already-escaped HTML cells; ``head`` is plain text."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(rows_cell for rows_cell in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _foldable(summary: str, content: str) -> str:
    """Folded on screen; printed (and saved as PDF) unfolded, since print cannot open a <details>.

    ``content`` must hold no element ids (it appears twice in the page).
    """
    return (
        f'<details class="fold"><summary>{esc(summary)}</summary>{content}</details>'
        f'<div class="print-only"><h3>{esc(summary)}</h3>{content}</div>'
    )


def _td(text: Any, num: bool = False) -> str:
    return f'<td class="num">{text}</td>' if num else f"<td>{text}</td>"


def _header(doc: dict[str, Any]) -> str:
    run, verdict, policy = doc["run"], doc["verdict"], doc["policy"]
    counting = [c for c in doc["checks"] if c.get("counts", True)]
    fails = [c for c in counting if c["status"] == "fail"]
    alerts = "".join(
        f'<div class="alert">LEDGER FAILED — {esc(p["peer_id"])}: '
        f"{esc(p['privacy']['ledger']['error'] or p['privacy']['ledger']['status'])}</div>"
        for p in doc["peers"]
        if p["privacy"]["enabled"] and p["privacy"]["ledger"]["status"] != "verified"
    )
    return (
        f"<h1>Compliance report — {esc(run['strategy'])} run, {len(run['peer_ids'])} peers</h1>"
        f'<p class="muted">{esc(doc["format"])} · generated {esc(doc["generated_at"])} · run '
        f"<code>{esc(run['run_dir'])}</code></p>"
        f'<div id="verdict" class="verdict v-{esc(verdict)}">Verdict: {esc(verdict.upper())} '
        f"({len(fails)} failed, "
        f"{sum(c['status'] == 'warn' for c in counting)} warnings, "
        f"{sum(c['status'] == 'pass' for c in counting)} passed)</div>"
        f'<p id="policy">Judged against the review policy <b>{esc(policy["name"])}</b> '
        f"(SHA-256 <code>{esc(policy['sha256'][:16])}…</code>): PASS means inside this policy. "
        f"{_policy_rules(policy['rules'])}</p>{alerts}"
    )


def _policy_rules(rules: dict[str, Any]) -> str:
    shown = ["max_epsilon", "max_delta", "max_delta_times_n", "require_dp", "require_secure_rng",
             "security_mode", "required_audits"]  # fmt: skip
    return "Rules: " + "; ".join(
        f"{esc(k)} = {esc(json.dumps(rules[k]))}" for k in shown if k in rules
    )


def _check_rows(checks: list[dict[str, Any]]) -> list[list[str]]:
    return [[_td(_status(c["status"])), _td(esc(c["title"])), _td(esc(c["detail"]))]
            for c in checks]  # fmt: skip


def _checks(doc: dict[str, Any]) -> str:
    head = ["status", "claim", "evidence"]
    counting = [c for c in doc["checks"] if c.get("counts", True)]
    aside = [c for c in doc["checks"] if not c.get("counts", True)]
    flagged = [c for c in counting if c["status"] == "fail"]
    flagged += [c for c in counting if c["status"] == "warn"]
    passed = [c for c in counting if c["status"] == "pass"]
    out = "<h2>Checks</h2>"
    out += (
        _table(head, _check_rows(flagged), "checks")
        if flagged
        else "<p>No failure, no warning.</p>"
    )
    if passed:
        out += _foldable(
            f"{len(passed)} passed checks", _table(head, _check_rows(passed), "checks")
        )
    if aside:
        out += ("<h3>Evidence beside the verdict</h3><p class=\"muted\">Audits the review policy "
                "does not require (each measured its own target, not this run's adapters) and "
                "positive controls (attacks that should succeed without DP): shown, not judged."
                "</p>" + _table(head, _check_rows(aside), "checks"))  # fmt: skip
    return out


def _run(doc: dict[str, Any]) -> str:
    run, h = doc["run"], doc["run"]["config_hash"]
    facts = [
        ("strategy", esc(run["strategy"])),
        ("peers", esc(", ".join(run["peer_ids"]))),
        ("aggregation rounds", str(run["rounds"])),
        ("base model", f"<code>{esc(run['base_model'])}</code>"),
        ("data", esc(run["data"])),
        ("started / finished (UTC)",
         f"{esc(run['started_at'] or 'not recorded')} / {esc(run['finished_at'] or 'not recorded')}"),
        ("differential privacy", "on" if run["dp_enabled"] else "<b>off</b>"),
        ("security mode", esc(run["security_mode"])),
        ("config hash (SHA-256)", f"<code>{esc(h['recomputed'])}</code> "
         + ("matches results.json" if h["match"] else f"<b>≠ recorded {esc(h['recorded'])}</b>")),
        ("results.json SHA-256", f"<code>{esc(run['results_sha256'])}</code>"),
    ]  # fmt: skip
    table = _table(["", ""], [[f"<th>{esc(k)}</th>", _td(v)] for k, v in facts])
    config = esc(json.dumps(run["config"], indent=2, ensure_ascii=False))
    return f"<h2>Run</h2>{table}" + _foldable("full configuration", f"<pre>{config}</pre>")


def _epsilon_plot(doc: dict[str, Any]) -> str:
    peers = [p for p in doc["peers"] if p["privacy"]["epsilon_by_round"]]
    if not peers:
        return '<p class="muted">No verified ledger: no ε to plot.</p>'
    series, top, last = [], 0.0, 1
    for i, p in enumerate(doc["peers"]):
        pts = [(float(e["round"]), _real(e["epsilon"])) for e in p["privacy"]["epsilon_by_round"]]
        if pts:
            series.append(Series(p["peer_id"], pts, colour(i), markers=True))
            top = max([top, *(y for _, y in pts if math.isfinite(y))])
            last = max(last, int(pts[-1][0]))
    budgets = {p["privacy"]["budget_epsilon"] for p in peers} - {None}
    # A budget far above what was spent would flatten every curve: keep it off the scale then.
    scale = max([top, *(b for b in budgets if b <= 3 * top or top == 0)])
    for b in sorted(budgets):
        label = "budget" if len(budgets) == 1 else f"budget {b:g}"
        label += f" {b:g} (off scale)" if b > scale else ""
        line = [(0.0, b), (float(last), b)] if b <= scale else []
        series.append(Series(label, line, "#b3261e", dashed=True))
    top = scale
    return line_chart("plot-epsilon", "ε spent by the end of each round (verified ledgers)", series,
                      x_label="round", y_label="ε (at each peer's δ)",
                      x_range=(0.0, float(last)), y_range=(0.0, top * 1.1 or 1.0))  # fmt: skip


def _privacy(doc: dict[str, Any]) -> str:
    rows, mech_rows = [], []
    for p in doc["peers"]:
        pr = p["privacy"]
        ledger = pr["ledger"]
        status = {"fail": "tampered or corrupt"}.get(ledger["status"], ledger["status"])
        rows.append([
            _td(esc(p["peer_id"])),
            _td(f"{_num(pr['epsilon_spent'])} / {_num(pr['budget_epsilon'], 'g')}", num=True),
            _td(esc(pr.get("unit") or "—")),
            _td(_num(pr["delta"], ".3g"), num=True), _td(esc(pr["accountant"] or "—")),
            _td(_ledger_status(status)),
            _td(str(ledger["events"]), num=True),
            _td("—" if pr["stopped_sharing_round"] is None else f"round {pr['stopped_sharing_round']}"),
            _td(_bounds(pr)),
            _td(f"<code>{esc(p['fingerprint'] or '—')}</code>"),
        ])  # fmt: skip
        for m in pr["mechanisms"]:
            released = ", ".join(f"{esc(k)} × {v}" for k, v in m["released"].items())
            mech_rows.append([_td(esc(p["peer_id"])), _td(esc(m["mechanism"])),
                              _td(_num(m["noise_multiplier"]), True), _td(_num(m["sample_rate"]), True),
                              _td(str(m["steps"]), True), _td(str(m["events"]), True),
                              _td(released)])  # fmt: skip
    head = ["peer", "ε spent / budget", "per (unit)", "δ", "accountant", "ledger", "events",
            "stopped sharing", "what ε allows an attacker", "key fingerprint"]  # fmt: skip
    mech = _table(["peer", "mechanism", "σ (noise multiplier)", "q (sample rate)", "steps",
                   "events", "releases recorded"], mech_rows)  # fmt: skip
    return (f"<h2>Privacy per peer</h2>{_table(head, rows, 'peers')}"
            f'<div class="plots">{_epsilon_plot(doc)}</div>'
            f"<h3>Mechanisms and parameters (from the ledgers)</h3>{mech}")  # fmt: skip


def _models(doc: dict[str, Any]) -> str:
    """Per peer: its last round's figures next to the model it keeps and its starting point."""
    rows = []
    for p in doc["peers"]:
        k, f = p.get("kept"), p["final"]
        rows.append([
            _td(esc(p["peer_id"])), _td(_num(f["test_ppl"], ".2f") if f else "—", True),
            _td(_num(k["test_ppl"], ".2f") if k else "—", True),
            _td(esc(k["origin"]) if k else "—"),
            _td(f"{_num(k['start_test_ppl'], '.2f')} ({esc(k['start_origin'])})" if k else "—"),
            _td(_num(k["base_test_ppl"], ".2f") if k else "—", True),
        ])  # fmt: skip
    head = ["peer", "last round: test ppl", "kept model: test ppl", "kept model: from",
            "starting point: test ppl", "base: test ppl"]  # fmt: skip
    note = ('<p class="muted">The kept model is the best each peer saw on its own validation split; '
            "it never leaves the site (its choice costs no ε). The last round's adapter is what "
            "the peer last trained and released.</p>")  # fmt: skip
    return f"<h2>Models per peer</h2>{_table(head, rows)}{note}"


def _bounds(pr: dict[str, Any]) -> str:
    """μ and the largest membership-test TPR at FPR 1 % / 0.1 % the peer's ledger allows."""
    bounds = pr.get("tpr_bounds")
    if not bounds:
        return "—"
    mu = (
        ""
        if pr.get("mu") is None
        else (f"μ = {_num(pr['mu'], '.3g')}{'' if pr.get('mu_exact') else ' (approx.)'}; ")
    )
    return esc(f"{mu}TPR ≤ {bounds.get('0.01', 1):.3g} at FPR 1 %, "
               f"≤ {bounds.get('0.001', 1):.3g} at 0.1 %")  # fmt: skip


def _pairs(d: dict[str, int]) -> str:
    return esc(", ".join(f"{k} × {v}" for k, v in d.items())) or "—"


def _traffic(doc: dict[str, Any]) -> str:
    rows, rel_rows = [], []
    secure = doc["security"]["mode"] == "full"
    for p in doc["peers"]:
        t = p["traffic"]
        # selections are logged by the secure round only; in mode off every peer broadcasts
        sent, got, declined = (
            (_pairs(t["adapters_sent_to"]), _pairs(t["adapters_received_from"]),
             _pairs(t["adapter_requests_declined"]))
            if secure else ("not logged (mode off)",) * 3
        )  # fmt: skip
        rows.append([_td(esc(p["peer_id"])), _td(f"{t['bytes_sent']:,}", True),
                     _td(f"{t['messages_sent']:,}", True), _td(sent), _td(got), _td(declined),
                     _td(str(t["messages_rejected"]), True)])  # fmt: skip
        grouped: dict[str, dict[str, int]] = {}
        for r in p["privacy"]["releases"]:
            grouped.setdefault(r["released"], {})[r["recipient"]] = r["count"]
        for released, to in grouped.items():
            rel_rows.append([_td(esc(p["peer_id"])), _td(esc(released)), _td(_pairs(to)),
                             _td(str(sum(to.values())), True)])  # fmt: skip
    sec = doc["security"]
    setup = ""
    if sec["he_context_bytes"] is not None:
        setup = (f'<p class="muted">Session setup (CKKS public contexts): {sec["he_context_messages"]} '
                 f"messages, {sec['he_context_bytes']:,} bytes (not in the per-round counts).</p>")  # fmt: skip
    head = ["peer", "bytes sent", "messages sent", "adapters sent to", "adapters received from",
            "declined requests of", "messages rejected"]  # fmt: skip
    rel = _table(["peer", "released", "to (× times)", "total"], rel_rows) if rel_rows else ""
    return (f"<h2>What was sent to whom</h2>{_table(head, rows)}{setup}"
            f"<h3>Releases recorded in the ledgers</h3>{rel or '<p>None.</p>'}")  # fmt: skip


def _trust(doc: dict[str, Any]) -> str:
    labels, rounds = doc["trust"]["peer_ids"], doc["trust"]["rounds"]
    if not rounds:
        return "<h2>Trust</h2><p>No aggregation round was recorded.</p>"
    mat = [[_real(v) for v in row] for row in rounds[-1]["matrix"]]
    final = heatmap("plot-trust-final", f"Trust weights, final round {rounds[-1]['round']}",
                    labels, mat)  # fmt: skip
    small = "".join(
        heatmap(f"plot-trust-round-{r['round']}", f"Round {r['round']}", labels,
                [[_real(v) for v in row] for row in r["matrix"]], cell=24)
        for r in rounds[-12:]
    )  # fmt: skip
    return (
        f'<h2>Trust</h2><div class="plots">{final}</div>'
        f'<h3>Every round</h3><div class="plots">{small}</div>'
    )


def _interval(metrics: dict[str, Any], key: str) -> str:
    """`` [lo, hi]`` of a figure: over trials when the campaign ran several, else the bootstrap
    interval of its one trial; empty for figures without one (older result files)."""
    for suffix, what in (("_trials_ci", "over trials"), ("_ci", "bootstrap")):
        lo, hi = metrics.get(f"{key}{suffix}_low"), metrics.get(f"{key}{suffix}_high")
        if (
            lo is not None
            and hi is not None
            and math.isfinite(_real(lo))
            and math.isfinite(_real(hi))
        ):
            return f' <span class="muted">[{_num(lo, ".3g")}, {_num(hi, ".3g")}] 95 % {what}</span>'
    return ""


def _audit(i: int, a: dict[str, Any]) -> str:
    rows, series = [], []
    for k, att in enumerate(a["attacks"]):
        m = att["metrics"]
        thr = (
            "; ".join(
                f"{esc(t['metric'])} {'≤' if t['bound'] == 'max' else '≥'} {_num(t['limit'], 'g')}: "
                f"{_num(t['value'])} {_status('pass' if t['passed'] else 'fail')}"
                for t in att["thresholds"]
            )
            or "—"
        )
        shown = ", ".join(f"{esc(key)} = {_num(m[key])}{_interval(m, key)}" for key in
                          ("roc_auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "exposure_bits",
                           "epsilon_lb", "token_recall") if key in m)  # fmt: skip
        rows.append([_td(esc(att["label"])), _td(esc(att["name"])),
                     _td(esc(", ".join(att["threat_models"]))), _td(shown or "—"), _td(thr)])  # fmt: skip
        if att["roc"]:
            series.append(Series(att["label"], [(x, y) for x, y in att["roc"]], colour(k)))
    plot = line_chart(f"plot-roc-{i}", f"ROC — {a['campaign']}", series, x_label="false positive rate",
                      y_label="true positive rate", x_range=(0.0, 1.0), y_range=(0.0, 1.0),
                      diagonal=True) if series else ""  # fmt: skip
    plot += _log_roc(i, a["campaign"], series)
    meta = (f"<p>{esc(a['description'])}</p><p class=\"muted\">file <code>{esc(a['file'])}</code> · "
            f"SHA-256 <code>{esc(a['sha256'])}</code> · threat models "
            f"{esc(', '.join(a['threat_models']))} · audited target ε = {_num(a['target_epsilon'])}"
            f"</p>")  # fmt: skip
    table = _table(["attack", "kind", "threat models", "figures", "thresholds"], rows)
    return f'<h3>{esc(a["campaign"])}</h3>{meta}{table}<div class="plots">{plot}</div>'


def _log_roc(i: int, campaign: str, series: list[Series]) -> str:
    """The same ROC curves on log–log axes, where the low-FPR regime that matters is visible.

    Points with FPR or TPR = 0 have no logarithm and are left out; the x axis starts at the
    smallest positive FPR the curves reach (at most 4 decades).
    """
    logged = [
        Series(s.label, [(math.log10(x), math.log10(y)) for x, y in s.points if x > 0 and y > 0],
               s.colour)
        for s in series
    ]  # fmt: skip
    xs = [x for s in logged for x, _ in s.points]
    if not xs:
        return ""
    lo = min(max(-4.0, math.floor(min(xs))), -1.0)
    logged = [  # below the frame: drawn on its lower or left edge
        Series(s.label, [(max(x, lo), max(y, lo)) for x, y in s.points if x >= lo], s.colour)
        for s in logged
    ]
    return line_chart(f"plot-roc-log-{i}", f"ROC, log–log — {campaign}", logged,
                      x_label="log₁₀ false positive rate", y_label="log₁₀ true positive rate",
                      x_range=(lo, 0.0), y_range=(lo, 0.0), diagonal=True)  # fmt: skip


def _audits(doc: dict[str, Any]) -> str:
    if not doc["audits"]:
        return ("<h2>Audits</h2><p>No audit results were attached "
                "(<code>secure-pcft report RUN_DIR --audit FILE</code>).</p>")  # fmt: skip
    return "<h2>Audits</h2>" + "".join(_audit(i, a) for i, a in enumerate(doc["audits"]))


def _scope(doc: dict[str, Any]) -> str:
    s = doc["scope"]
    facts = [("privacy unit", s["privacy_unit"]), ("δ", s["delta"]),
             ("what the relay sees", s["relay_sees"])]  # fmt: skip
    table = _table(["", ""], [[f"<th>{esc(k)}</th>", _td(esc(v))] for k, v in facts])
    left_out = "".join(f"<li>{esc(item)}</li>" for item in s["not_covered"])
    tms = "".join(f"<li><b>{esc(t['id'])}</b> {esc(t['title'])}</li>" for t in s["threat_models"])
    return (
        '<h2 id="scope">What this report does not cover</h2>'
        "<p>The verdict says that the recorded releases stayed within each peer's (ε, δ), that the "
        "channels were the configured ones and that attached audits met their thresholds; no more."
        f"</p>{table}<h3>Not covered</h3><ul>{left_out}</ul>"
        f"<h3>Adversaries considered (threat_models/)</h3><ul>{tms}</ul>"
    )


def _provenance(doc: dict[str, Any]) -> str:
    adapters = [[_td(esc(p["peer_id"])), _td(f"<code>{esc(p['adapter']['sha256'])}</code>"),
                 _td(f"{p['adapter']['bytes']:,}", True)]
                for p in doc["peers"] if p["adapter"]]  # fmt: skip
    sec = doc["security"]
    keys = (f"<p>Key fingerprints from: <b>{esc(sec['fingerprint_source'] or 'none')}</b>"
            + (f" (<code>{esc(sec['roster'])}</code>)" if sec["roster"] else "") + "</p>")  # fmt: skip
    run_versions = doc["run"]["versions"]
    here = doc["versions"]
    rows = [[_td(esc(k)), _td(esc(run_versions.get(k, "not recorded"))), _td(esc(v))]
            for k, v in here.items()]  # fmt: skip
    versions = _table(["library", "the run", "this report"], rows)
    out = f"<h2>Provenance</h2>{keys}<h3>Library versions</h3>{versions}"
    if adapters:
        out += "<h3>Saved adapters</h3>" + _table(["peer", "SHA-256", "bytes"], adapters)
    return out


def render_html(doc: dict[str, Any]) -> str:
    """The whole page for a report document (see :mod:`secure_pcft.report.schema`)."""
    title = f"secure-pcft compliance report — {doc['run']['strategy']} — {doc['verdict'].upper()}"
    body = "".join([_header(doc), _checks(doc), _scope(doc), _privacy(doc), _models(doc), _traffic(doc),
                    _trust(doc), _audits(doc), _run(doc), _provenance(doc)])  # fmt: skip
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )
