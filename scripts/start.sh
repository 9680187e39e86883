#!/usr/bin/env bash
# Set up the environment (first run: about 2 minutes) and start the server on http://127.0.0.1:8188.
# Arguments go to main.py, e.g. `bash scripts/start.sh --port 8189` or `bash scripts/start.sh run workflow.json`;
# `bash scripts/start.sh --front-end comfyui` installs and serves ComfyUI's official frontend instead of ours.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
# ComfyUI's official frontend is an optional dependency, installed when asked for
case " $* " in
  *" --front-end comfyui "* | *" --front-end=comfyui "*) bash scripts/setup.sh requirements-frontend.txt ;;
esac
exec .venv/bin/python main.py "$@"
