"""ComfyUI's user routes for its official frontend (and our editor): users, settings and user data files.

Translation only: `app.user_data.UserData` owns the folders, path rules and atomic writes. Status codes follow
ComfyUI's server (app/user_manager.py, app/app_settings.py): 400 for a missing or unusable name, 403 for a path
outside the user's folder or an unknown user, 404 for a missing file, 409 for an existing one with
overwrite=false; the bodies are JSON here, as on every route of ours.
"""
from __future__ import annotations

from aiohttp import web

from app.files import UnsafePathError
from app.user_data import (
    DEFAULT_USER,
    UnknownUserError,
    UserData,
    UserFileExistsError,
    file_info,
)
from server.requests import in_thread, read_json, read_json_value
from server.security import json_error
from server.state import STATE

USER_HEADER = "comfy-user"  # the header ComfyUI's frontend names the user with under --multi-user


def _user_data(request: web.Request) -> UserData:
    state = request.app[STATE]
    return UserData(state.settings.user_dir, state.config.multi_user)


def _user(request: web.Request, unknown_status: type[web.HTTPException] = web.HTTPForbidden) -> tuple[UserData, str]:
    """The user data and the request's user; an unknown user is a 403 (401 on the settings routes, as ComfyUI)."""
    data = _user_data(request)
    try:
        user = data.request_user(request.headers.get(USER_HEADER))
    except UnknownUserError as error:
        raise unknown_status(text=str(error.args[0])) from None
    data.prepare(user)
    return data, user


def _flag(request: web.Request, name: str, default: str = "") -> bool:
    """ComfyUI's boolean query parameters: true only when the value is 'true' (any case)."""
    return request.query.get(name, default).lower() == "true"


def _overwrite(request: web.Request) -> bool:
    """ComfyUI's `overwrite` query parameter: everything but the exact value 'false' means yes."""
    return request.query.get("overwrite", "true") != "false"


def _name(request: web.Request, key: str) -> str:
    name = request.match_info.get(key, "")
    if not name:
        raise web.HTTPBadRequest(text=f"no {key} given")
    return name


async def get_users(request: web.Request) -> web.Response:
    """{storage, users} under --multi-user, else {storage, migrated} (whether the default user's folder exists)."""
    data = _user_data(request)
    if data.multi_user:
        return web.json_response({"storage": "server", "users": data.users()})
    return web.json_response({"storage": "server", "migrated": data.user_root(DEFAULT_USER).is_dir()})


async def post_users(request: web.Request) -> web.Response:
    """Create a user from {"username": ...}; answers the new user's id."""
    body = await read_json(request)
    username = body.get("username")
    if not isinstance(username, str):
        raise web.HTTPBadRequest(text="'username' must be a string")
    try:
        return web.json_response(_user_data(request).add_user(username))
    except ValueError as error:
        return web.json_response({"error": str(error)}, status=400)


async def get_settings(request: web.Request) -> web.Response:
    data, user = _user(request, web.HTTPUnauthorized)
    return web.json_response(await in_thread(data.settings, user))


async def get_setting(request: web.Request) -> web.Response:
    """One setting's value, or null when it is not set."""
    data, user = _user(request, web.HTTPUnauthorized)
    settings = await in_thread(data.settings, user)
    return web.json_response(settings.get(request.match_info["id"]))


async def post_settings(request: web.Request) -> web.Response:
    """Merge the posted object into the user's settings."""
    data, user = _user(request, web.HTTPUnauthorized)
    update = await read_json(request)
    settings = await in_thread(data.settings, user)
    await in_thread(data.save_settings, user, {**settings, **update})
    return web.Response(status=200)


async def post_setting(request: web.Request) -> web.Response:
    """Set one setting to the posted JSON value (any JSON, not only objects)."""
    data, user = _user(request, web.HTTPUnauthorized)
    value = await read_json_value(request)
    settings = await in_thread(data.settings, user)
    settings[request.match_info["id"]] = value
    await in_thread(data.save_settings, user, settings)
    return web.Response(status=200)


async def list_userdata(request: web.Request) -> web.Response:
    directory = request.query.get("dir", "")
    if not directory:
        raise web.HTTPBadRequest(text="Directory not provided")
    data, user = _user(request)
    try:
        files = await in_thread(data.list_files, user, directory, _flag(request, "recurse"),
                                _flag(request, "full_info"), _flag(request, "split"))
    except UnsafePathError:
        raise web.HTTPForbidden(text="Invalid directory") from None
    except FileNotFoundError:
        raise web.HTTPNotFound(text="Directory not found") from None
    return web.json_response(files)


async def list_userdata_v2(request: web.Request) -> web.Response:
    data, user = _user(request)
    try:
        return web.json_response(await in_thread(data.list_tree, user, request.query.get("path", "")))
    except UnsafePathError:
        raise web.HTTPBadRequest(text="Invalid path requested") from None
    except FileNotFoundError:
        raise web.HTTPNotFound(text="Requested path not found") from None
    except NotADirectoryError:
        raise web.HTTPBadRequest(text="Requested path is not a directory") from None


async def get_userdata(request: web.Request) -> web.StreamResponse:
    data, user = _user(request)
    try:
        path = data.existing_file(user, _name(request, "file"))
    except UnsafePathError:
        raise web.HTTPForbidden(text="Invalid file path") from None
    except FileNotFoundError:
        raise web.HTTPNotFound(text="File not found") from None
    return web.FileResponse(path)


async def post_userdata(request: web.Request) -> web.Response:
    """Write the raw body to a user file; answers its path relative to the user's folder, or its file info."""
    data, user = _user(request)
    name = _name(request, "file")
    body = await request.read()
    try:
        path = await in_thread(data.write, user, name, body, _overwrite(request))
    except UnsafePathError:
        raise web.HTTPForbidden(text="Invalid file path") from None
    except UserFileExistsError:
        return json_error(409, "File already exists")
    except OSError as error:  # a folder in the way, a name the filesystem refuses
        raise web.HTTPBadRequest(text=f"cannot write {name!r}: {error.strerror or error}") from None
    return _written(request, data, user, path)


async def delete_userdata(request: web.Request) -> web.Response:
    data, user = _user(request)
    try:
        await in_thread(data.delete, user, _name(request, "file"))
    except UnsafePathError:
        raise web.HTTPForbidden(text="Invalid file path") from None
    except FileNotFoundError:
        raise web.HTTPNotFound(text="File not found") from None
    return web.Response(status=204)


async def move_userdata(request: web.Request) -> web.Response:
    data, user = _user(request)
    source, destination = _name(request, "file"), _name(request, "dest")
    try:
        path = await in_thread(data.move, user, source, destination, _overwrite(request))
    except UnsafePathError:
        raise web.HTTPForbidden(text="Invalid file path") from None
    except UserFileExistsError:
        return json_error(409, "File already exists")
    except FileNotFoundError:
        raise web.HTTPNotFound(text="File not found") from None
    except OSError as error:
        raise web.HTTPBadRequest(text=f"cannot move {source!r} to {destination!r}: {error.strerror or error}") \
            from None
    return _written(request, data, user, path)


def _written(request: web.Request, data: UserData, user: str, path) -> web.Response:
    """ComfyUI's answer to a write or move: the path relative to the user's folder, or its file info."""
    if _flag(request, "full_info"):
        return web.json_response(file_info(path, data.user_root(user).resolve()))
    return web.json_response(data.relative(user, path))


async def user_css(request: web.Request) -> web.StreamResponse:
    """The user's own stylesheet (user.css in their folder), which ComfyUI's frontend links from its page."""
    data, user = _user(request)
    path = await in_thread(data.resolve, user, "user.css")
    if not path.is_file():
        return web.Response(text="", content_type="text/css")
    return web.FileResponse(path, headers={"Content-Type": "text/css"})


ROUTES = [
    web.get("/user.css", user_css),
    web.get("/users", get_users),
    web.post("/users", post_users),
    web.get("/settings", get_settings),
    web.post("/settings", post_settings),
    web.get("/settings/{id}", get_setting),
    web.post("/settings/{id}", post_setting),
    web.get("/userdata", list_userdata),
    web.get("/v2/userdata", list_userdata_v2),
    web.get("/userdata/{file}", get_userdata),
    web.post("/userdata/{file}", post_userdata),
    web.delete("/userdata/{file}", delete_userdata),
    web.post("/userdata/{file}/move/{dest}", move_userdata),
]
