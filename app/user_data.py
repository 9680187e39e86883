"""Users and their files in the user folder: ComfyUI's user manager and settings file, without HTTP.

ComfyUI keeps each user's data in `<user dir>/<user id>/` (saved workflows under `workflows/`, settings in
`comfy.settings.json`); with `--multi-user` the users are listed in `<user dir>/users.json` and the client picks
one with its `comfy-user` header, else everyone is the user `default`. Every client-given path is checked here:
no `..`, no absolute path, no NUL, and after resolving symbolic links it must stay inside the user's own folder.
Files are written atomically (`app.files`), so a crash never leaves half a workflow.
"""
from __future__ import annotations

import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from app.files import UnsafePathError, write_atomically, write_new_file

log = logging.getLogger(__name__)

DEFAULT_USER = "default"
SETTINGS_FILE = "comfy.settings.json"
USERS_FILE = "users.json"
# What a user's folder starts with: the folders and files ComfyUI's frontend reads as it starts (saved workflows,
# subgraph blueprints, the user's stylesheet, saved node templates), so that none of its first requests fails.
STARTER_FOLDERS = ("workflows", "subgraphs")
STARTER_FILES = {"user.css": b"", "comfy.templates.json": b"[]"}
_USER_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9-_]+")


class UnknownUserError(KeyError):
    """The request named a user that is not configured (ComfyUI answers 403 or 401 for it)."""


class UserFileExistsError(FileExistsError):
    """A write or move with overwrite=false met an existing file (ComfyUI's 409)."""


@dataclass(frozen=True)
class UserData:
    """The user folder seen as ComfyUI's UserManager: users, each user's root folder, files and settings.

    It holds no state beyond its two settings, so two servers (or a restarted one) over the same folder agree.
    """
    user_dir: Path
    multi_user: bool = False

    def users(self) -> dict[str, str]:
        """User id -> display name; only `default` without --multi-user."""
        if not self.multi_user:
            return {DEFAULT_USER: DEFAULT_USER}
        path = self.user_dir / USERS_FILE
        try:
            users = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.error("the users file %s cannot be read (%s); no users are known", path, error)
            return {}
        return {str(key): str(value) for key, value in users.items()} if isinstance(users, dict) else {}

    def add_user(self, name: str) -> str:
        """Register a user as ComfyUI does: id = the name's safe characters + '_' + a uuid. Raises ValueError for
        an empty or duplicate name."""
        name = name.strip()
        if not name:
            raise ValueError("username not provided")
        users = self.users()
        if name in users.values():
            raise ValueError("Duplicate username.")
        user_id = f"{_USER_ID_UNSAFE.sub('-', name)}_{uuid.uuid4()}"
        users[user_id] = name
        write_atomically(self.user_dir / USERS_FILE, json.dumps(users).encode("utf-8"))
        return user_id

    def request_user(self, header: str | None) -> str:
        """The user a request acts as: its `comfy-user` header with --multi-user, else `default`."""
        user = header if self.multi_user and header is not None else DEFAULT_USER
        if user not in self.users():
            raise UnknownUserError(f"Unknown user: {user}")
        return user

    def prepare(self, user: str) -> None:
        """Create what a user's folder starts with (`STARTER_FOLDERS`, `STARTER_FILES`) where it is missing; never
        replaces a file."""
        root = self.user_root(user)
        for folder in STARTER_FOLDERS:
            (root / folder).mkdir(parents=True, exist_ok=True)
        for name, data in STARTER_FILES.items():
            if not (root / name).exists():
                try:
                    write_new_file(root, [name], data)
                except ValueError:  # another request created it meanwhile
                    pass

    def user_root(self, user: str) -> Path:
        """`<user dir>/<user>`, refusing an id that would name anything else (ids come from users.json)."""
        root = Path(os.path.realpath(self.user_dir))
        folder = root / user
        if user in ("", ".", "..") or "/" in user or "\\" in user or "\x00" in user:
            raise UnsafePathError(f"unusable user id {user!r}")
        return folder

    def resolve(self, user: str, relative: str) -> Path:
        """The real path of a client-given path inside the user's folder (decoded once when URL-encoded, as ComfyUI's
        frontend sends `workflows%2Fa.json`); refuses `..`, absolute paths and links leading out."""
        if "%" in relative:
            relative = unquote(relative)
        parts = relative.replace("\\", "/").split("/")
        if not relative or "\x00" in relative or os.path.isabs(relative) or relative.startswith(("/", "\\")) \
                or ".." in parts:
            raise UnsafePathError(f"the path {relative!r} is not allowed")
        root = self.user_root(user)
        target = Path(os.path.realpath(root / "/".join(part for part in parts if part not in ("", "."))))
        real_root = Path(os.path.realpath(root))
        if target != real_root and real_root not in target.parents:
            raise UnsafePathError(f"the path {relative!r} leaves the user folder")
        return target

    def list_files(self, user: str, directory: str, recurse: bool, full_info: bool,
                   split: bool) -> list[Any]:
        """ComfyUI's GET /userdata: the files (not folders, not hidden) under `directory`, as relative paths, as
        [path, *parts] with `split`, or as {path, size, modified, created} with `full_info`."""
        folder = self.resolve(user, directory)
        if not folder.is_dir():
            raise FileNotFoundError(directory)
        results: list[Any] = []
        for path in sorted(self._walk(folder, recurse)):
            relative = path.relative_to(folder).as_posix()
            if full_info:
                results.append(file_info(path, folder))
            elif split:
                results.append([relative, *relative.split("/")])
            else:
                results.append(relative)
        return results

    def list_tree(self, user: str, relative: str) -> list[dict[str, Any]]:
        """ComfyUI's GET /v2/userdata: every folder and file below `relative` (the user's root when empty), with
        paths relative to that root, folders first, then by name."""
        root = self.user_root(user)
        folder = self.resolve(user, relative) if relative else Path(os.path.realpath(root))
        if not folder.exists():
            if not relative:
                return []  # a new user has no folder yet
            raise FileNotFoundError(relative)
        if not folder.is_dir():
            raise NotADirectoryError(relative)
        real_root = Path(os.path.realpath(root))
        entries: list[dict[str, Any]] = []
        for current, folders, names in os.walk(folder):
            here = Path(current)
            for name in folders:
                entries.append({"name": name, "path": (here / name).relative_to(real_root).as_posix(),
                                "type": "directory"})
            for name in names:
                path = here / name
                entry: dict[str, Any] = {"name": name, "path": path.relative_to(real_root).as_posix(), "type": "file"}
                try:
                    stat = path.stat()
                    entry.update(size=stat.st_size, modified=stat.st_mtime)
                except OSError:  # a dangling link: listed by name, as ComfyUI does
                    pass
                entries.append(entry)
        entries.sort(key=lambda entry: (entry["type"] != "directory", entry["name"].lower()))
        return entries

    def existing_file(self, user: str, relative: str) -> Path:
        """A user file that exists (FileNotFoundError when it does not)."""
        path = self.resolve(user, relative)
        if not path.is_file():
            raise FileNotFoundError(relative)
        return path

    def write(self, user: str, relative: str, data: bytes, overwrite: bool) -> Path:
        """Write a user file atomically, creating its folders; with overwrite=False an existing one is kept
        (UserFileExistsError), and a racing writer cannot slip in between the check and the write."""
        path = self.resolve(user, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite:
            write_atomically(path, data)
        elif path.exists():
            raise UserFileExistsError(relative)
        else:
            try:
                write_new_file(path.parent, [path.name], data)
            except ValueError:
                raise UserFileExistsError(relative) from None
        return path

    def delete(self, user: str, relative: str) -> None:
        self.existing_file(user, relative).unlink()

    def move(self, user: str, source: str, destination: str, overwrite: bool) -> Path:
        """Rename a user file (creating the destination's folders); with overwrite=False an existing destination
        is kept (UserFileExistsError)."""
        source_path = self.existing_file(user, source)
        target = self.resolve(user, destination)
        if not overwrite and target.exists():
            raise UserFileExistsError(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source_path, target)
        return target

    def relative(self, user: str, path: Path) -> str:
        """A path inside the user's folder, relative to it (how ComfyUI answers writes and moves)."""
        return path.relative_to(os.path.realpath(self.user_root(user))).as_posix()

    def settings(self, user: str) -> dict[str, Any]:
        """The user's `comfy.settings.json`; {} when missing or unreadable (ComfyUI's answer for a corrupt file)."""
        path = self.resolve(user, SETTINGS_FILE)
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.error("the settings file %s is corrupted (%s); using no settings", path, error)
            return {}
        return settings if isinstance(settings, dict) else {}

    def save_settings(self, user: str, settings: dict[str, Any]) -> None:
        write_atomically(self.resolve(user, SETTINGS_FILE), json.dumps(settings, indent=4).encode("utf-8"))

    def _walk(self, folder: Path, recurse: bool):
        """The visible files in `folder` (and below it with `recurse`), skipping hidden names as glob('*') does."""
        for current, folders, names in os.walk(folder):
            folders[:] = [name for name in folders if not name.startswith(".")] if recurse else []
            for name in names:
                path = Path(current) / name
                if not name.startswith(".") and path.is_file():
                    yield path


def file_info(path: Path, relative_to: Path) -> dict[str, Any]:
    """ComfyUI's FileInfo: path relative to the listed folder, size in bytes, modified and created times."""
    stat = path.stat()
    return {"path": path.relative_to(relative_to).as_posix(), "size": stat.st_size, "modified": stat.st_mtime,
            "created": stat.st_ctime}
