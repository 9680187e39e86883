#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned dependencies into it. Safe to run again.
# torch==2.13.0 is pinned so pip takes the CPU build from this machine's disk, not a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements="${1:-requirements.txt}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements.txt requirements-nodeps.txt requirements-frontend.txt "$requirements" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  # spandrel without its declared torchvision (see requirements-nodeps.txt)
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
  touch "$stamp"
fi
