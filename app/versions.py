"""The versions our server reports as ComfyUI's does (GET /system_stats), in one place: the ComfyUI release whose
HTTP API and execution behaviour ours follows, the official frontend package we pin (`--front-end comfyui`;
requirements-frontend.txt pins the same), and the workflow templates package when one is installed."""
from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

# ComfyUI's release whose API ours answers as (its newest execution test suite passes against our server)
COMFYUI_VERSION = "0.38.1"
# the comfyui-frontend-package release `--front-end comfyui` serves
COMFYUI_FRONTEND_VERSION = "1.58.1"
TEMPLATES_PACKAGE = "comfyui-workflow-templates"


def installed_templates_version() -> str | None:
    """The installed comfyui-workflow-templates version; None when it is not installed (as ComfyUI reports it)."""
    try:
        return metadata.version(TEMPLATES_PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def installed_templates_dir() -> Path | None:
    """The installed comfyui-workflow-templates package's templates folder (index.json, workflows, pictures), which
    the server serves under /templates as ComfyUI does; None when the package is not installed."""
    spec = importlib.util.find_spec("comfyui_workflow_templates")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "templates"
    return folder if folder.is_dir() else None
