#!/usr/bin/env bash
# Set up the environment (first run: about 2 minutes) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-test.txt
# One torch thread: on a small shared machine oversubscribed threads make tiny models 40x slower.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
