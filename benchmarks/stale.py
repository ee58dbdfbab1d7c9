"""Which published figures may no longer match the code: a result is *stale* when the library, or the
script that produced it, changed after the commit that produced it.

The producing commit is the one the result records (``_meta.commit``, written by the benchmarks
since ``benchmarks/_common.provenance``; ``provenance.commit`` in audit results), else — for older files — the commit that last wrote the
result file (the code it came from is at most that new). A change is any difference under
``secure_pcft/`` or in the producing script between that commit and ``HEAD``; that is conservative
(a change need not move a figure), which is the point: a stale figure is re-run or marked stale next
to where the README quotes it.

    python benchmarks/stale.py            # table; exit status 1 when something is stale
    python benchmarks/stale.py --json     # the same as JSON
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULT_DIRS = ("benchmarks/results", "audits/results")
SCRIPTS = {  # result file prefix -> the script that writes it
    "crypto_primitives": "benchmarks/crypto_primitives.py",
    "crypto": "benchmarks/crypto.py",
    "dp_step_time": "benchmarks/dp_step_time.py",
    "generalisation": "benchmarks/generalisation.py",
    "privacy_unit": "benchmarks/generalisation.py",  # generalisation.py --unit --results privacy_unit.json
    "privacy_utility": "benchmarks/privacy_utility.py",
    "scale": "benchmarks/scale.py",
    "strategies": "benchmarks/strategies.py",
    "validation_scale": "benchmarks/validation_scale.py",
}


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return out.stdout.strip()


def producing_commit(path: Path) -> tuple[str, str]:
    """(commit, how it is known): recorded in the file, else the commit that last wrote it."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        doc = {}
    meta = doc.get("_meta") if isinstance(doc, dict) else None
    if isinstance(doc, dict) and not isinstance(meta, dict):
        meta = doc.get("provenance")  # audit results (secure-pcft audit)
    if isinstance(meta, dict) and isinstance(meta.get("commit"), str) and meta["commit"]:
        dirty = " (tree dirty)" if meta.get("dirty") else ""
        return meta["commit"], f"recorded{dirty}"
    return _git("log", "-1", "--format=%H", "--", str(path.relative_to(REPO))), "last written"


def script_of(path: Path) -> str:
    if path.parent.name == "results" and path.parent.parent.name == "audits":
        return "audits"
    stem = path.stem
    for prefix, script in sorted(SCRIPTS.items(), key=lambda kv: -len(kv[0])):
        if stem.startswith(prefix):
            return script
    return ""


def cell_commits(path: Path) -> list[str]:
    """Commits recorded by the parts of a merged result (``_commit``, ``_commits_per_seed``,
    ``_label_commits`` of each cell, as ``benchmarks/generalisation.py --merge`` writes them)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    found: set[str] = set()
    for key, cell in doc.items() if isinstance(doc, dict) else ():
        if key.startswith("_") or not isinstance(cell, dict):
            continue
        values = [cell.get("_commit"), *cell.get("_commits_per_seed", []),
                  *cell.get("_label_commits", {}).values()]  # fmt: skip
        found |= {v.removesuffix("-dirty") for v in values if isinstance(v, str) and v}
    return sorted(found)


def status(path: Path) -> dict[str, Any]:
    commit, how = producing_commit(path)
    if not commit:
        return {"file": str(path.relative_to(REPO)), "commit": None, "known": how, "stale": True,
                "changed": ["(not in git: no producing commit)"]}  # fmt: skip
    watched = ["secure_pcft"] + ([script_of(path)] if script_of(path) else [])
    changed: set[str] = set()
    oldest = commit
    for c in [commit, *cell_commits(path)]:  # a merged file is as stale as its oldest part
        diff = _git("diff", "--name-only", c, "HEAD", "--", *watched).splitlines()
        if len(diff) > len(changed):
            oldest = c
        changed |= set(diff)
    return {"file": str(path.relative_to(REPO)), "commit": oldest[:10], "known": how,
            "stale": bool(changed), "changed": sorted(changed)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = [status(p) for d in RESULT_DIRS for p in sorted((REPO / d).glob("*.json"))
            if not p.name.endswith(".scores.json")]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            mark = "STALE" if r["stale"] else "ok"
            what = f"{len(r['changed'])} files changed since" if r["stale"] else "unchanged since"
            print(f"{mark:<6}{r['file']:<58}{r['commit'] or '-':<12}({r['known']}) {what}")
    return 1 if any(r["stale"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
