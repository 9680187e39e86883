"""ComfyUI's frontend-only routes about folders, model files and translations (#20).

- `/internal/folder_paths` and `/internal/files/{output|input|temp}` (ComfyUI's internal_routes.py);
- `/experiment/models` and `/experiment/models/{folder}`, the model library (ComfyUI's app/model_manager.py);
- `/view_metadata/{folder}?filename=`, a .safetensors file's `__metadata__` (ComfyUI's server.py);
- `/i18n`, the translations in plugins' `locales/<lang>/` folders (ComfyUI's app/custom_node_manager.py).
Translation only: folders and listings come from the settings and the runtime, never from the compat modules.
"""
from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

from aiohttp import web

from app.files import FOLDER_TYPES
from app.log_ring import terminal_size
from server.requests import existing_file, in_thread, read_json
from server.state import STATE

log = logging.getLogger(__name__)

HIDDEN_MODEL_FOLDERS = ("configs", "custom_nodes")  # ComfyUI's model library leaves these out
LOCALE_EXTRA_FILES = ("nodeDefs", "commands", "settings")  # merged into main.json under their own key
MAX_SAFETENSORS_HEADER = 1024 * 1024  # ComfyUI reads at most this much of a header for /view_metadata


async def folder_paths(request: web.Request) -> web.Response:
    """{model folder: [its paths]}; each of ours is one folder under --models-dir."""
    state = request.app[STATE]
    runtime = await state.runtime()
    return web.json_response({folder: [str(state.settings.models_dir / folder)] for folder in runtime.model_folders()})


async def directory_files(request: web.Request) -> web.Response:
    """The plain files directly in the input, output or temp folder, newest first."""
    kind = request.match_info["directory_type"]
    if kind not in FOLDER_TYPES:
        return web.json_response({"error": "Invalid directory type"}, status=400)
    return web.json_response(await in_thread(_newest_first, request.app[STATE].folder(kind)))


def _newest_first(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    entries = [entry for entry in os.scandir(folder) if entry.is_file()]
    return [entry.name for entry in sorted(entries, key=lambda entry: -entry.stat().st_mtime)]


async def model_library_folders(request: web.Request) -> web.Response:
    """[{name, folders: [paths]}] for every model folder the library shows."""
    state = request.app[STATE]
    runtime = await state.runtime()
    return web.json_response([{"name": folder, "folders": [str(state.settings.models_dir / folder)]}
                              for folder in runtime.model_folders() if folder not in HIDDEN_MODEL_FOLDERS])


async def model_library_files(request: web.Request) -> web.Response:
    """[{name, pathIndex, modified, created, size}] for the model files of one folder (404 for an unknown one)."""
    state = request.app[STATE]
    runtime = await state.runtime()
    folder = request.match_info["folder"]
    if folder not in runtime.model_folders():
        raise web.HTTPNotFound(text=f"no model folder {folder!r}")
    names = await in_thread(runtime.list_models, folder)
    return web.json_response(await in_thread(_model_entries, state.settings.models_dir / folder, names))


def _model_entries(folder: Path, names: list[str]) -> list[dict[str, Any]]:
    entries = []
    for name in names:
        try:
            stat = (folder / name).stat()
        except OSError:  # removed since it was listed
            continue
        entries.append({"name": name, "pathIndex": 0, "modified": stat.st_mtime, "created": stat.st_ctime,
                        "size": stat.st_size})
    return entries


async def view_metadata(request: web.Request) -> web.Response:
    """A model's safetensors `__metadata__`; 404 (as ComfyUI) for anything that is not a listed .safetensors
    file with metadata."""
    state = request.app[STATE]
    runtime = await state.runtime()
    folder, filename = request.match_info["folder"], request.query.get("filename", "")
    if folder not in runtime.model_folders() or not filename.endswith(".safetensors"):
        raise web.HTTPNotFound(text="no such safetensors file")
    path = existing_file(state.settings.models_dir, folder, filename)
    metadata = await in_thread(_safetensors_metadata, path) if path is not None else None
    if metadata is None:
        raise web.HTTPNotFound(text="no metadata in this file")
    return web.json_response(metadata)


def _safetensors_metadata(path: Path) -> dict[str, Any] | None:
    """The `__metadata__` object of a safetensors header (8-byte little-endian length, then JSON), or None."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            return None
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_SAFETENSORS_HEADER:
            return None
        try:
            header = json.loads(handle.read(length))
        except (ValueError, RecursionError):
            return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else None


async def translations(request: web.Request) -> web.Response:
    """{lang: {...main.json, nodeDefs, commands, settings}} merged over the loaded plugins, in name order."""
    runtime = await request.app[STATE].runtime()
    folders = [record.path for record in sorted(runtime.plugins, key=lambda record: record.name)
               if record.status == "loaded" and record.path.is_dir()]
    return web.json_response(await in_thread(_merged_locales, folders))


def _merged_locales(plugin_folders: list[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for plugin in plugin_folders:
        locales = plugin / "locales"
        if not locales.is_dir():
            continue
        for language in sorted(path for path in locales.iterdir() if path.is_dir()):
            strings = _json_object(language / "main.json")
            for extra in LOCALE_EXTRA_FILES:
                extra_strings = _json_object(language / f"{extra}.json")
                if extra_strings:
                    strings[extra] = extra_strings
            if strings:
                merged[language.name] = _merge(merged.get(language.name, {}), strings)
    return merged


def _json_object(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when missing or broken (a broken translation must not break the frontend)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.error("cannot read the translation file %s: %s", path, error)
        return {}
    return value if isinstance(value, dict) else {}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` over `base`, merging nested objects key by key (a later plugin's string wins)."""
    result = dict(base)
    for key, value in update.items():
        result[key] = _merge(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) \
            else value
    return result


async def logs(request: web.Request) -> web.Response:
    """The recent log lines as one string, each "<time> - <line>" (ComfyUI's /internal/logs)."""
    return web.json_response("".join(f"{entry['t']} - {entry['m']}" for entry in request.app[STATE].logs.entries()))


async def raw_logs(request: web.Request) -> web.Response:
    """{"entries": [{"t", "m"}], "size": {"cols", "rows"}}, what the frontend's terminal panel shows first."""
    return web.json_response({"entries": request.app[STATE].logs.entries(), "size": terminal_size()})


async def subscribe_logs(request: web.Request) -> web.Response:
    """{"enabled": bool, "clientId": id}: new log lines go to that websocket client as "logs" messages, or stop."""
    body = await read_json(request)
    client_id, enabled = body.get("clientId"), body.get("enabled")
    if not isinstance(client_id, str) or not client_id or not isinstance(enabled, bool):
        raise web.HTTPBadRequest(text="the body needs 'clientId' (a string) and 'enabled' (true or false)")
    request.app[STATE].logs.subscribe(client_id, enabled)
    return web.Response(status=200)


ROUTES = [
    web.get("/internal/logs", logs),
    web.get("/internal/logs/raw", raw_logs),
    web.patch("/internal/logs/subscribe", subscribe_logs),
    web.get("/internal/folder_paths", folder_paths),
    web.get("/internal/files/{directory_type}", directory_files),
    web.get("/experiment/models", model_library_folders),
    web.get("/experiment/models/{folder}", model_library_files),
    web.get("/view_metadata/{folder}", view_metadata),
    web.get("/i18n", translations),
]
