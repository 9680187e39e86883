"""Listings of folder trees for the loaders' and LoadImage's choices, reused while nothing in them changes.

Loaders list their model folders in `INPUT_TYPES`, so on every validation and every /object_info; a scan is
reused until a directory it entered changes its mtime (ComfyUI's rule), which costs one stat per directory
instead of a walk of the tree. A file that is a symbolic link to somewhere outside the listed folder is left out
unless links are followed (`follow_links`), so a listing only offers what will load; what was left out and why is
logged when a folder is scanned. Knows nothing of models or nodes: paths and extensions in, sorted names out.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path, PurePath, PurePosixPath
from typing import NamedTuple

log = logging.getLogger(__name__)

DIFFUSERS_INDEX = "model_index.json"
# A directory changed this recently may change again within its filesystem's timestamp granularity (up to
# 2 s on FAT) without its mtime moving, so a scan that saw one is not reused.
_UNSETTLED_NS = 2_000_000_000


class _TreeEntry(NamedTuple):
    relative_path: str  # '/'-separated, relative to the scanned folder
    name: str
    is_file: bool  # following symbolic links, as Path.is_file does
    outside_link: str | None  # where a symbolic link leads when that is outside the scanned folder


class _ScannedTree(NamedTuple):
    entries: tuple[_TreeEntry, ...]
    directory_mtimes: dict[Path, int | None]  # every directory the scan entered; None where none could be read
    settled: bool  # no directory had changed within _UNSETTLED_NS of the scan

    def is_current(self) -> bool:
        return self.settled and all(_directory_mtime(directory) == mtime
                                    for directory, mtime in self.directory_mtimes.items())


class FolderListings:
    """Scans of folder trees, each reused until a directory it entered changes its mtime (ComfyUI's rule).

    Loaders list their model folders in `INPUT_TYPES`, so on every validation and every /object_info; a reused
    scan costs one stat per directory instead of a walk of the tree. Safe to share between threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trees: dict[Path, _ScannedTree] = {}

    def __reduce__(self):
        return FolderListings, ()  # a copy (pickled Folders) starts empty: a lock does not travel

    def files(self, root: Path, extensions: tuple[str, ...], follow_links: bool = False) -> list[str]:
        """Files with one of `extensions` under `root` (hidden ones and, unless `follow_links`, links leading
        outside `root` left out), as sorted '/'-separated relative paths."""
        return _files_in(self._tree(root), extensions, follow_links)

    def diffusers_models(self, root: Path, follow_links: bool = False) -> list[str]:
        return sorted(PurePosixPath(entry.relative_path).parent.as_posix() for entry in self._tree(root).entries
                      if entry.name == DIFFUSERS_INDEX and entry.is_file
                      and (follow_links or entry.outside_link is None))

    def _tree(self, root: Path) -> _ScannedTree:
        with self._lock:
            known = self._trees.get(root)
        if known is not None and known.is_current():
            return known
        scanned = _scan_tree(root)
        with self._lock:
            self._trees[root] = scanned
        return scanned


def list_files(root: Path, extensions: tuple[str, ...], follow_links: bool = False) -> list[str]:
    """Files under `root` with one of `extensions` (hidden ones left out), as sorted '/'-separated relative
    paths; scanned afresh (`Folders` methods reuse scans)."""
    return _files_in(_scan_tree(root), extensions, follow_links)


def _files_in(tree: _ScannedTree, extensions: tuple[str, ...], follow_links: bool) -> list[str]:
    return sorted(entry.relative_path for entry in tree.entries
                  if entry.is_file and PurePath(entry.name).suffix.lower() in extensions
                  and not entry.name.startswith(".") and (follow_links or entry.outside_link is None))


def _scan_tree(root: Path) -> _ScannedTree:
    """Everything under `root`, entering directories as `Path.rglob` does (not through symbolic links), and the
    mtime of each directory, read before its contents so that a change during the scan leaves a newer mtime."""
    started = time.time_ns()
    entries: list[_TreeEntry] = []
    mtimes: dict[Path, int | None] = {}
    pending = [root]
    while pending:
        directory = pending.pop()
        mtimes[directory] = _directory_mtime(directory)
        if mtimes[directory] is None:
            continue
        try:
            with os.scandir(directory) as listing:
                children = list(listing)
        except OSError:  # unreadable, or removed since: skipped as rglob skips it, and read again next time
            mtimes[directory] = None
            continue
        for child in children:
            path = directory / child.name
            entries.append(_TreeEntry(path.relative_to(root).as_posix(), child.name, _is_file(child),
                                      _outside_link(child, path, root)))
            if child.is_dir(follow_symlinks=False):
                pending.append(path)
    settled = all(mtime is None or mtime < started - _UNSETTLED_NS for mtime in mtimes.values())
    return _ScannedTree(tuple(entries), mtimes, settled)


def _directory_mtime(path: Path) -> int | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns if stat.S_ISDIR(status.st_mode) else None


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _outside_link(entry: os.DirEntry, path: Path, root: Path) -> str | None:
    """Where a symbolic link leads when that is outside `root` (logged: such a file is listed only when links are
    followed); None for other entries."""
    if not entry.is_symlink():
        return None
    target, inside = path.resolve(), root.resolve()
    if target == inside or inside in target.parents:
        return None
    log.warning("%s is a link to %s, outside %s: it is offered only when links out of the folder are allowed "
                "(--allow-model-links for the models folder)", path, target, root)
    return str(target)
