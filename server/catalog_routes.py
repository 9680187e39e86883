"""Routes that describe what is installed: nodes, models, devices, shipped workflows, plugins and their scripts."""
from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

from aiohttp import web

from app import versions
from app.template_cards import card_jpeg
from server.requests import existing_file, in_thread
from server.state import STATE


async def object_info(request: web.Request) -> web.Response:
    runtime = await request.app[STATE].runtime()
    return web.json_response(await in_thread(runtime.registry.object_info))


async def object_info_one(request: web.Request) -> web.Response:
    runtime = await request.app[STATE].runtime()
    node_class = request.match_info["node_class"]
    if node_class not in runtime.registry:
        raise web.HTTPNotFound(text=f"no node class {node_class!r}")
    return web.json_response({node_class: await in_thread(runtime.registry.node_info, node_class)})


async def model_folders(request: web.Request) -> web.Response:
    runtime = await request.app[STATE].runtime()
    return web.json_response(runtime.model_folders())


async def model_files(request: web.Request) -> web.Response:
    runtime = await request.app[STATE].runtime()
    folder = request.match_info["folder"]
    if folder not in runtime.model_folders():
        raise web.HTTPNotFound(text=f"no model folder {folder!r}")
    return web.json_response(await in_thread(runtime.list_models, folder))


async def embeddings(request: web.Request) -> web.Response:
    runtime = await request.app[STATE].runtime()
    names = await in_thread(runtime.list_models, "embeddings")
    return web.json_response([name.rsplit(".", 1)[0] for name in names])


async def system_stats(request: web.Request) -> web.Response:
    runtime = await request.app[STATE].runtime()
    return web.json_response(await in_thread(runtime.system_stats))


SHIPPED_TEMPLATES = "nodeflow"  # the module name of our own shipped workflows in the templates map
# the folders of a node pack ComfyUI takes example workflows from, in its order
EXAMPLE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")


async def _template_folders(request: web.Request) -> dict[str, Path]:
    """Module name -> its workflow templates folder: our shipped workflows, then every loaded folder plugin's
    example workflows (ComfyUI's first existing folder of `EXAMPLE_FOLDERS`)."""
    state = request.app[STATE]
    folders = {SHIPPED_TEMPLATES: state.config.workflows_dir}
    runtime = await state.runtime()
    for record in runtime.plugins:
        if record.status == "loaded" and record.path.is_dir():
            found = next((record.path / name for name in EXAMPLE_FOLDERS if (record.path / name).is_dir()), None)
            if found is not None:
                folders.setdefault(record.name, found)
    return folders


async def workflow_templates(request: web.Request) -> web.Response:
    """ComfyUI's {module: [workflow names]} of the template workflows (modules without any left out): ours under
    "nodeflow" (API format) and node packs' example workflows."""
    folders = await _template_folders(request)
    listing = {module: sorted(path.stem for path in folder.glob("*.json"))
               for module, folder in folders.items() if folder.is_dir()}
    return web.json_response({module: names for module, names in listing.items() if names})


async def workflow_template(request: web.Request) -> web.StreamResponse:
    """One template file as ComfyUI serves them, `/workflow_templates/{module}/{file}`: the workflow
    (`{name}.json`) or its picture; a shipped workflow without a picture gets a card (`app.template_cards`)."""
    module, name = request.match_info["module"], request.match_info["name"]
    folder = (await _template_folders(request)).get(module)
    path = None if folder is None else existing_file(folder, "", name)
    if path is not None and path.suffix in (".json", ".jpg", ".jpeg", ".png", ".webp"):
        content_type = "application/json" if path.suffix == ".json" else mimetypes.guess_type(path.name)[0]
        return web.FileResponse(path, headers={"Content-Type": content_type or "application/octet-stream"})
    stem, _, suffix = name.rpartition(".")
    if module == SHIPPED_TEMPLATES and suffix == "jpg" and existing_file(folder, "", stem + ".json") is not None:
        return web.Response(body=await in_thread(card_jpeg, stem), content_type="image/jpeg")
    raise web.HTTPNotFound(text="no such workflow template")


async def core_template_file(request: web.Request) -> web.StreamResponse:
    """The official frontend's core templates: the installed comfyui-workflow-templates package's files under
    /templates, as ComfyUI serves them; without the package an empty index (our shipped workflows are the
    "nodeflow" module of /workflow_templates) and no logos."""
    name = request.match_info["name"]
    folder = await in_thread(versions.installed_templates_dir)
    path = None if folder is None else existing_file(folder, "", name)
    if path is not None:
        return web.FileResponse(path, headers={"Content-Type": mimetypes.guess_type(path.name)[0]
                                               or "application/octet-stream"})
    if folder is None and name.startswith("index") and name.endswith(".json"):
        return web.json_response({} if name == "index_logo.json" else [])
    raise web.HTTPNotFound(text="no such template file")


async def _subgraph_files(request: web.Request) -> dict[str, tuple[Path, str]]:
    """ComfyUI's global subgraphs: id (sha256 of "custom_node" + the file's path) -> (file, node pack) of every
    loaded folder plugin's subgraphs/*.json."""
    runtime = await request.app[STATE].runtime()
    found = {}
    for record in runtime.plugins:
        if record.status == "loaded" and record.path.is_dir() and (record.path / "subgraphs").is_dir():
            for file in sorted((record.path / "subgraphs").glob("*.json")):
                path = file.as_posix()
                found[hashlib.sha256(f"custom_node{path}".encode()).hexdigest()] = (
                    file, f"custom_nodes.{record.path.name}")
    return found


def _subgraph_entry(file: Path, node_pack: str) -> dict:
    return {"source": "custom_node", "name": file.stem, "info": {"node_pack": node_pack}}


async def global_subgraphs(request: web.Request) -> web.Response:
    """{id: {source, name, info}} of the node packs' subgraph blueprints (their data from /global_subgraphs/{id})."""
    return web.json_response({key: _subgraph_entry(*found) for key, found in (await _subgraph_files(request)).items()})


async def global_subgraph(request: web.Request) -> web.Response:
    """One blueprint with its `data` (the file's text); null when unknown, as ComfyUI answers."""
    found = (await _subgraph_files(request)).get(request.match_info["id"])
    if found is None:
        return web.json_response(None)
    data = await in_thread(found[0].read_text, "utf-8")
    return web.json_response({**_subgraph_entry(*found), "data": data})


async def custom_nodes(request: web.Request) -> web.Response:
    """Every plugin found: name, path, status, load time, error (with traceback), nodes, collisions."""
    runtime = await request.app[STATE].runtime()
    return web.json_response([record.as_dict() for record in runtime.plugins])


async def extensions(request: web.Request) -> web.Response:
    """The JavaScript files the editor imports at start: the served frontend's own extensions (ComfyUI's frontend
    ships its core ones in extensions/), then those plugins expose through WEB_DIRECTORY."""
    runtime = await request.app[STATE].runtime()
    own = request.app[STATE].config.web_dir / "extensions"
    urls = [f"/extensions/{script.relative_to(own).as_posix()}" for script in sorted(own.rglob("*.js"))] \
        if own.is_dir() else []
    for record in runtime.plugins:
        if record.status == "loaded" and record.web_directory is not None:
            for script in sorted(record.web_directory.rglob("*.js")):
                urls.append(f"/extensions/{record.name}/{script.relative_to(record.web_directory).as_posix()}")
    return web.json_response(urls)


async def extension_file(request: web.Request) -> web.StreamResponse:
    runtime = await request.app[STATE].runtime()
    record = next((r for r in runtime.plugins if r.name == request.match_info["plugin"]
                   and r.status == "loaded" and r.web_directory is not None), None)
    if record is not None:
        folder = record.web_directory
    else:  # the served frontend's own extensions (extensions/core/... of ComfyUI's frontend)
        folder = request.app[STATE].config.web_dir / "extensions" / request.match_info["plugin"]
        if request.match_info["plugin"] in ("", ".", "..") or not folder.is_dir():
            raise web.HTTPNotFound(text="no such extension")
    path = existing_file(folder, "", request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound(text="no such file")
    content_type = "text/javascript" if path.suffix == ".js" else mimetypes.guess_type(path.name)[0]
    return web.FileResponse(path, headers={"Content-Type": content_type or "application/octet-stream"})


ROUTES = [
    web.get("/object_info", object_info),
    web.get("/object_info/{node_class}", object_info_one),
    web.get("/models", model_folders),
    web.get("/models/{folder}", model_files),
    web.get("/embeddings", embeddings),
    web.get("/system_stats", system_stats),
    web.get("/workflow_templates", workflow_templates),
    web.get("/workflow_templates/{module}/{name}", workflow_template),
    web.get("/templates/{name}", core_template_file),
    web.get("/global_subgraphs", global_subgraphs),
    web.get("/global_subgraphs/{id}", global_subgraph),
    web.get("/custom_nodes", custom_nodes),
    web.get("/extensions", extensions),
    web.get("/extensions/{plugin}/{path:.+}", extension_file),
]
