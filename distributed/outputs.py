"""Moving the files a prompt writes from a worker to the head, so the head's folders stay the only ones.

A worker's nodes write into the worker's private output and temp folders. After each node that reports
results (`executed`) and at the end of a prompt, the worker ships every new file's bytes with that message.
The head writes each one under the name a node would have chosen in the head's own folder (ComfyUI's
`<prefix>_<counter:05>_.<ext>` gets the next free counter there; any other name is kept unless taken) and
rewrites the ui entries (`{"filename", "subfolder", "type"}`) to the names it wrote, so clients and history
cannot tell that a worker ran the prompt.

On the worker a shipped file is truncated to zero bytes rather than deleted: its name stays taken, so the
worker never writes that name again, and a cached node's ui (which names the old file) keeps meaning one
file on the head. Knows nothing of Ray, HTTP or the engine.
"""
from __future__ import annotations

import itertools
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from app.files import resolve_in_folder, write_new_file

FOLDER_TYPES = ("output", "temp")
_COUNTED = re.compile(r"^(?P<base>.+)_(?P<counter>\d+)_(?P<ext>\.[^.]+)?$")


@dataclass(frozen=True)
class ShippedFile:
    folder_type: str  # "output" or "temp"
    subfolder: str  # '/'-separated inside the folder; "" for the folder itself
    name: str
    data: bytes


class OutputCollector:
    """Worker side: the files written into the private folders since the last collection."""

    def __init__(self, folders: Mapping[str, Path]) -> None:
        self.folders = dict(folders)

    def collect(self) -> tuple[ShippedFile, ...]:
        """Sorted by path, so a batch `x_00001_`, `x_00002_` keeps its order on the head."""
        shipped = []
        for folder_type, root in self.folders.items():
            for path in sorted(root.rglob("*")):
                if path.name.startswith(".") or not path.is_file() or path.stat().st_size == 0:
                    continue
                subfolder = path.parent.relative_to(root).as_posix()
                shipped.append(ShippedFile(folder_type, "" if subfolder == "." else subfolder, path.name,
                                           path.read_bytes()))
                os.truncate(path, 0)
        return tuple(shipped)


class OutputPlacer:
    """Head side: writes shipped files into the head's folders and remembers the name each one got, per
    source (one worker incarnation), to rewrite the ui entries that name it, now or from a cached node later."""

    def __init__(self, folders: Mapping[str, Path]) -> None:
        self.folders = dict(folders)
        self._names: dict[tuple[str, str, str, str], str] = {}
        self._lock = threading.Lock()

    def place(self, source: str, shipped: Iterable[ShippedFile]) -> None:
        for file in shipped:
            with self._lock:
                self._names[(source, file.folder_type, file.subfolder, file.name)] = self._write(file)

    def rename(self, source: str, ui: dict[str, Any]) -> dict[str, Any]:
        """A copy of a node's ui output with every file entry naming the file the head wrote."""
        return {key: [self._renamed(source, entry) for entry in value] if isinstance(value, list) else value
                for key, value in ui.items()}

    def forget(self, source: str) -> None:
        """Drop a worker incarnation's names: they died with its cache."""
        with self._lock:
            for key in [key for key in self._names if key[0] == source]:
                del self._names[key]

    def _renamed(self, source: str, entry: Any) -> Any:
        if not isinstance(entry, dict) or "filename" not in entry:
            return entry
        key = (source, entry.get("type", "output"), entry.get("subfolder") or "", entry["filename"])
        with self._lock:
            name = self._names.get(key)
        return entry if name is None else {**entry, "filename": name}

    def _write(self, file: ShippedFile) -> str:
        """Create the file under the first free name (exclusively, so concurrent runs never share one), complete
        or not at all."""
        directory = resolve_in_folder(self.folders[file.folder_type], file.subfolder, file.name).parent
        directory.mkdir(parents=True, exist_ok=True)
        return write_new_file(directory, _candidate_names(directory, file.name), file.data)


def _candidate_names(directory: Path, name: str) -> Iterator[str]:
    match = _COUNTED.match(name)
    if match is None:
        stem, suffix = os.path.splitext(name)
        yield name
        yield from (f"{stem} ({number}){suffix}" for number in itertools.count(1))
        return
    base, ext = match.group("base"), match.group("ext") or ""
    yield from (f"{base}_{counter:05}_{ext}" for counter in itertools.count(_next_counter(directory, base, ext)))


def _next_counter(directory: Path, base: str, ext: str) -> int:
    """One more than the highest counter of `<base>_<counter>_<ext>` in the folder, as SaveImage counts."""
    pattern = re.compile(re.escape(base) + r"_(\d+)_" + re.escape(ext) + "$")
    counters = [int(match.group(1)) for entry in os.scandir(directory) if (match := pattern.match(entry.name))]
    return max(counters, default=0) + 1
