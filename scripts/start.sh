#!/usr/bin/env bash
# Set up the environment (first run: about 2 minutes) and start the server on http://127.0.0.1:8188.
# Arguments go to main.py, e.g. `bash scripts/start.sh --port 8189` or `bash scripts/start.sh run workflow.json`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
exec .venv/bin/python main.py "$@"
