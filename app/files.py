"""Reading and writing user files (input, output, temp) without ever leaving the allowed folders.

Every name from a client is resolved with realpath (so `..`, absolute paths and symlinks pointing outside
are caught after resolution) and must stay inside its folder. Upload names are reduced to a safe base name.
Knows nothing of HTTP: the server's file routes and the cluster's output shipping both rely on these checks.
"""
from __future__ import annotations

import io
import os
import re
import secrets
from pathlib import Path
from typing import Iterable
from urllib.parse import unquote

from PIL import Image, UnidentifiedImageError

FOLDER_TYPES = ("output", "input", "temp")
_UNSAFE_NAME = re.compile(r"[^\w.\- ()\[\]]+", re.UNICODE)


class UnsafePathError(ValueError):
    """A client-given path that would leave its folder, or a name that cannot be used."""


def resolve_in_folder(folder: Path, subfolder: str, filename: str) -> Path:
    """The real path of `subfolder/filename` inside `folder`; refuses anything that ends up outside it."""
    if not filename or "\x00" in filename or "\x00" in subfolder:
        raise UnsafePathError("a file name is required")
    if os.path.isabs(subfolder) or os.path.isabs(filename):
        raise UnsafePathError("absolute paths are not allowed")
    root = Path(os.path.realpath(folder))
    target = Path(os.path.realpath(root / subfolder / filename))
    if target != root and root not in target.parents:
        raise UnsafePathError("the path leaves the allowed folder")
    return target


def safe_upload_name(name: str) -> str:
    """A base name with path separators and odd characters removed; refuses what is left empty or hidden."""
    base = unquote(name).replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_NAME.sub("_", base).strip(" .")
    if not cleaned or cleaned.startswith("."):
        raise UnsafePathError(f"unusable file name {name!r}")
    return cleaned[:200]


def safe_subfolder(subfolder: str) -> str:
    parts = [part for part in subfolder.replace("\\", "/").split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise UnsafePathError("the subfolder leaves the allowed folder")
    return "/".join(safe_upload_name(part) for part in parts)


def unique_name(folder: Path, name: str) -> str:
    """`name`, or `stem (1).ext`, `stem (2).ext`, ... the first that does not exist in `folder`."""
    candidate = name
    stem, suffix = os.path.splitext(name)
    counter = 1
    while (folder / candidate).exists():
        candidate = f"{stem} ({counter}){suffix}"
        counter += 1
    return candidate


def check_image(data: bytes) -> Image.Image:
    """The decoded image, or a ValueError when the bytes are not an image Pillow can read."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image: {exc}") from None


def check_upload(data: bytes) -> None:
    """Accept an image Pillow can read or a video FFmpeg can read (what LoadVideo's upload button sends to the
    same route, as ComfyUI's does); a ValueError otherwise."""
    try:
        check_image(data)
        return
    except ValueError as image_error:
        import av

        try:
            with av.open(io.BytesIO(data), mode="r") as container:
                if container.streams.video and next(container.decode(video=0), None) is not None:
                    return
        except (av.error.FFmpegError, StopIteration, ValueError):
            pass
        raise ValueError(f"{image_error}; not a readable video either") from None


def write_new_file(directory: Path, names: Iterable[str], data: bytes) -> str:
    """Write `data` under the first of `names` that is free in `directory`, never replacing a file: written under
    a hidden temporary name first and then linked into place, so the file appears complete or not at all and two
    writers never share a name. Returns the name taken."""
    temporary = directory / f".{secrets.token_hex(8)}.partial"
    try:
        with open(temporary, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        for name in names:
            try:
                os.link(temporary, directory / name)  # atomic, and fails if the name is taken
                return name
            except FileExistsError:
                continue
            except OSError:  # a filesystem without hard links: a rename, after looking (not atomic against races)
                if not (directory / name).exists():
                    os.replace(temporary, directory / name)
                    return name
        raise ValueError(f"no free file name in {directory}")
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name then rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def apply_mask_to_alpha(original: Image.Image, mask: Image.Image) -> Image.Image:
    """ComfyUI's /upload/mask: the original's RGB with the mask's alpha channel as its alpha."""
    result = original.convert("RGBA")
    alpha = mask.convert("RGBA").getchannel("A").resize(result.size, Image.Resampling.LANCZOS)
    result.putalpha(alpha)
    return result
