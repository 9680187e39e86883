"""The browser frontends the server can serve at /: our own editor (web/, the default) or ComfyUI's official
frontend, the installed `comfyui-frontend-package` (`--front-end comfyui`; requirements-frontend.txt pins it)."""
from __future__ import annotations

import importlib.util
import logging
from importlib import metadata
from pathlib import Path

from app import versions

log = logging.getLogger(__name__)

NODEFLOW, COMFYUI = "nodeflow", "comfyui"
FRONT_ENDS = (NODEFLOW, COMFYUI)
_PACKAGE, _DISTRIBUTION = "comfyui_frontend_package", "comfyui-frontend-package"
INSTALL_HINT = ("install it with `.venv/bin/pip install -r requirements-frontend.txt` (or start with "
                "`bash scripts/start.sh --front-end comfyui`, which installs it)")


class FrontendMissing(Exception):
    """The chosen frontend is not installed; the message says how to install it."""


def official_frontend_dir() -> Path:
    """The installed official frontend's static folder (index.html, assets, scripts, extensions); a version other
    than the pinned one is served with a warning."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise FrontendMissing(f"--front-end comfyui: ComfyUI's frontend ({_DISTRIBUTION}) is not installed; "
                              f"{INSTALL_HINT}")
    static = Path(spec.origin).parent / "static"
    if not (static / "index.html").is_file():
        raise FrontendMissing(f"--front-end comfyui: {static} has no index.html; reinstall it: {INSTALL_HINT}")
    installed = metadata.version(_DISTRIBUTION)
    if installed != versions.COMFYUI_FRONTEND_VERSION:
        log.warning("ComfyUI's frontend %s is installed; nodeflow is tested with %s", installed,
                    versions.COMFYUI_FRONTEND_VERSION)
    return static
