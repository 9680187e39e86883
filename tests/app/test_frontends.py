"""Choosing the frontend: the official one's folder when installed, a clear error when not; one pinned version."""
import importlib.util
import re

import pytest

from app import frontends, versions
from app.settings import PROJECT_DIR


def test_the_pinned_frontend_version_is_one_fact():
    pinned = re.search(r"comfyui-frontend-package==([\w.]+)", (PROJECT_DIR / "requirements-frontend.txt").read_text())
    assert pinned and pinned.group(1) == versions.COMFYUI_FRONTEND_VERSION
    assert "-r requirements-frontend.txt" in (PROJECT_DIR / "requirements-test.txt").read_text()


def test_a_missing_frontend_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(frontends.FrontendMissing, match="pip install -r requirements-frontend.txt"):
        frontends.official_frontend_dir()


@pytest.mark.skipif(importlib.util.find_spec("comfyui_frontend_package") is None, reason="frontend not installed")
def test_the_installed_frontend_folder():
    folder = frontends.official_frontend_dir()
    assert (folder / "index.html").is_file() and (folder / "scripts" / "app.js").is_file()
