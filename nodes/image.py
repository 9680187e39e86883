"""Image nodes: loading from the input and output folders, saving PNGs (still or animated) and animated WebPs to
the output/temp folders, comparing two previews, resizing.

IMAGE is float [batch, height, width, channels] in 0..1 (a [batch, height, width] tensor saves as greyscale);
MASK is float [batch, height, width] (1 where the image was transparent). Saved files carry the API-format prompt
and the editor workflow as ComfyUI writes them (PNG `prompt`/`workflow` text chunks, animated PNG `comf` chunks,
WebP EXIF tags); each appears complete or not at all (written under a temporary name, then moved into place),
never replaces another file, and a prompt run again after a crash replaces what its interrupted run wrote
(`SaveJournal`). Knows nothing of HTTP or the executor: the prompt and workflow arrive through the hidden PROMPT
and EXTRA_PNGINFO inputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nodes import resize
from nodes.environment import IMAGE_EXTENSIONS, current_environment, resolve_inside
from nodes.latent import MAX_RESOLUTION

_COUNTER = re.compile(r"_(\d+)_(\.\w+)$")


def load_image_file(path: Path, input_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All frames of an image file as IMAGE [frames, H, W, 3] and MASK [frames, H, W] (1 - alpha)."""
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    try:
        opened = Image.open(path)
        frames = [ImageOps.exif_transpose(frame) for frame in ImageSequence.Iterator(opened)]
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{input_name}: {path.name} is not a readable image ({error})") from error
    images, masks = [], []
    size = frames[0].size
    for frame in frames:
        if frame.size != size:
            continue
        if frame.mode == "I":
            frame = frame.point(lambda value: value * (1 / 255))
        rgb = np.asarray(frame.convert("RGB"), dtype=np.float32) / 255.0
        images.append(torch.from_numpy(rgb))
        if "A" in frame.getbands():
            alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
            masks.append(1.0 - torch.from_numpy(alpha))
        elif frame.mode == "P" and "transparency" in frame.info:
            alpha = np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
            masks.append(1.0 - torch.from_numpy(alpha))
        else:
            masks.append(torch.zeros(rgb.shape[:2]))
    return torch.stack(images), torch.stack(masks)


class LoadImage:
    DESCRIPTION = "Loads an image from the input folder; its mask is 1 where the image is transparent."
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    OUTPUT_TOOLTIPS = ("The image (all frames of an animation, as a batch).", "1 - the alpha channel.")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_input_images()
        return {"required": {"image": (names, {"image_upload": True, "tooltip": "The image in the input folder."})}}

    @classmethod
    def IS_CHANGED(cls, image: str) -> str:
        path = resolve_inside(current_environment().folders.input_dir, image, "image")
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def load_image(self, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = resolve_inside(current_environment().folders.input_dir, image, "image")
        return load_image_file(path, "image")


def split_prefix(folder: Path, filename_prefix: str) -> tuple[Path, str, str]:
    """(directory, subfolder, base name) for a prefix like "sub/name", refusing paths outside `folder`."""
    prefix = filename_prefix.replace("\\", "/").strip() or "ComfyUI"
    subfolder, _, base = prefix.rpartition("/")
    directory = (folder / subfolder).resolve()
    root = folder.resolve()
    if directory != root and root not in directory.parents:
        raise ValueError(f"filename_prefix: {filename_prefix!r} points outside {folder}")
    if not base:
        raise ValueError(f"filename_prefix: {filename_prefix!r} has no file name")
    return directory, subfolder, base


def _next_counter(directory: Path, base: str, extension: str) -> int:
    counters = [int(match.group(1)) for path in directory.glob(f"{_glob_escape(base)}_*_{extension}")
                if (match := _COUNTER.search(path.name)) and path.name[:-len(match.group(0))] == base
                and match.group(2) == extension]
    return max(counters, default=0) + 1


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _png_metadata(prompt: Any, extra_pnginfo: Any) -> Any:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            info.add_text(str(key), json.dumps(value))
    return info


def to_pil(image: torch.Tensor) -> Any:
    """One IMAGE [H, W, C] (or a grey [H, W]) as a PIL image: values truncated to 0..255, as ComfyUI's save nodes
    do, so the same floats give byte-identical files; one channel or [H, W] gives a greyscale image."""
    from PIL import Image

    array = np.clip(255.0 * image.float().cpu().numpy(), 0, 255).astype(np.uint8)
    return Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[-1] == 1 else array)


def plan_names(directory: Path, base: str, count: int, extension: str,
               journal: "SaveJournal | None") -> tuple[list[str], bool]:
    """The `count` file names `<base>_<counter>_<extension>` to write, and whether they replace existing files:
    with a `journal` (this prompt's run of the node), a re-run after a crash gets the names its interrupted run
    chose, and what that run left half-written is removed."""
    planned = journal.names(directory, base, count) if journal is not None else None
    if planned is None:
        counter = _next_counter(directory, base, extension)
        planned = [f"{base}_{counter + index:05}_{extension}" for index in range(count)]
        if journal is not None:
            journal.record(directory, base, planned)
        return planned, False
    for name in planned:  # what the crashed run was writing when it died
        for leftover in directory.glob(f".{_glob_escape(name)}.*.partial"):
            leftover.unlink(missing_ok=True)
    return planned, True


def save_images(images: torch.Tensor, folder: Path, filename_prefix: str, folder_type: str, prompt: Any,
                extra_pnginfo: Any, compress_level: int, journal: "SaveJournal | None" = None) -> list[dict[str, str]]:
    """Write each image as `<prefix>_<counter>_.png` and return the UI entries. Each file is written under a
    hidden temporary name and moved into place complete, never replacing another file; with a `journal` (the
    prompt's run of this node), a re-run of the same prompt after a crash writes to the names its interrupted run
    chose, replacing what that run left, instead of adding files. A [batch, height, width] tensor is saved as
    greyscale images, as ComfyUI does."""
    if images.ndim not in (3, 4):
        raise ValueError(f"images: expected [batch, height, width, channels], got shape {tuple(images.shape)}")
    directory, subfolder, base = split_prefix(folder, filename_prefix)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = _png_metadata(prompt, extra_pnginfo)
    planned, replace = plan_names(directory, base, len(images), ".png", journal)
    results = []
    for image, name in zip(images, planned):
        written = _write_png(directory, name, base, to_pil(image), metadata, compress_level, replace)
        results.append({"filename": written, "subfolder": subfolder, "type": folder_type})
    return results


def _write_png(directory: Path, name: str, base: str, pil: Any, metadata: Any, compress_level: int,
               replace: bool) -> str:
    return write_file(directory, name, base, replace,
                      lambda handle: pil.save(handle, format="PNG", pnginfo=metadata, compress_level=compress_level))


def write_file(directory: Path, name: str, base: str, replace: bool, write: Callable[[Any], None]) -> str:
    """Write (`write(handle)`) under a hidden temporary name, then move it to `name` (replacing only when told
    to; otherwise a taken name moves on to the next counter): the file appears complete or not at all."""
    temporary = directory / f".{name}.{secrets.token_hex(4)}.partial"
    try:
        with open(temporary, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, directory / name)
            return name
        while True:
            try:
                os.link(temporary, directory / name)  # atomic, and fails if the name is taken
                return name
            except FileExistsError:
                name = _next_name(name, base)
            except OSError:  # a filesystem without hard links: a rename, after looking (not atomic against races)
                if not (directory / name).exists():
                    os.replace(temporary, directory / name)
                    return name
                name = _next_name(name, base)
    finally:
        temporary.unlink(missing_ok=True)


def _next_name(name: str, base: str) -> str:
    match = _COUNTER.search(name)
    return f"{base}_{int(match.group(1)) + 1:05}_{match.group(2)}"


class SaveJournal:
    """Which file names one node of one prompt chose, kept in the user folder until the prompt is long done, so
    that a prompt run again after a crash (the same prompt id) replaces its own earlier files. A node fed a list
    saves once per item: the journal keeps one entry per call, in order, each tagged with the run (`attempt`) that
    wrote it, so the calls of one run never take each other's names while a later run takes them over in the same
    order. A journal entry is written before any image, atomically; journals older than `KEEP_SECONDS` are pruned
    as new ones are written."""

    KEEP_SECONDS = 7 * 24 * 3600

    def __init__(self, folder: Path, prompt_id: str, node_id: str, attempt: str = "") -> None:
        self.folder = folder
        key = hashlib.sha256(f"{prompt_id}\0{node_id}".encode()).hexdigest()[:32]
        self.path = folder / f"{key}.json"
        self.attempt = attempt or secrets.token_hex(8)

    @classmethod
    def for_current_node(cls, user_dir: Path) -> "SaveJournal | None":
        """The journal of the node running now; None outside a prompt (a script calling the node). The run's
        token lives on the node's run context, which spans all of its calls over a list."""
        from engine.progress import current_node_context

        context = current_node_context()
        if context is None or not context.prompt_id:
            return None
        attempt = vars(context).setdefault("save_journal_attempt", secrets.token_hex(8))
        return cls(user_dir / "save-journal", context.prompt_id, context.node_id, attempt)

    def _entries(self) -> list[dict[str, Any]]:
        try:
            entries = json.loads(self.path.read_text()).get("entries")
        except (OSError, ValueError, AttributeError):
            return []
        return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []

    def names(self, directory: Path, base: str, count: int) -> list[str] | None:
        """The names an earlier run of this node chose in its call at this position (this run's next call) for the
        same folder, prefix and number of images; None for new names."""
        entries = self._entries()
        position = sum(entry.get("attempt") == self.attempt for entry in entries)
        if position >= len(entries) or entries[position].get("attempt") == self.attempt:
            return None
        entry = entries[position]
        names = entry.get("names")
        if entry.get("directory") != str(directory) or entry.get("base") != base or not isinstance(names, list) \
                or len(names) != count or not all(isinstance(name, str) and "/" not in name for name in names):
            return None
        self._write(entries[:position] + [dict(entry, attempt=self.attempt)] + entries[position + 1:])
        return names

    def record(self, directory: Path, base: str, names: list[str]) -> None:
        """Note the names this run's next call chose (replacing what an earlier run noted from here on)."""
        entries = self._entries()
        position = sum(entry.get("attempt") == self.attempt for entry in entries)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._prune()
        self._write(entries[:position] + [{"attempt": self.attempt, "directory": str(directory), "base": base,
                                           "names": names}])

    def _write(self, entries: list[dict[str, Any]]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.partial")
        try:
            temporary.write_text(json.dumps({"entries": entries}))
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)

    def _prune(self) -> None:
        cutoff = time.time() - self.KEEP_SECONDS
        for old in self.folder.glob("*.json"):
            try:
                if old.stat().st_mtime < cutoff:
                    old.unlink()
            except OSError:
                continue


class SaveImage:
    DESCRIPTION = ("Saves images as PNG files in the output folder, with the workflow embedded; existing files are "
                   "never replaced (a prompt run again after a crash replaces only its own earlier files).")
    CATEGORY = "image"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save_images"
    # ComfyUI's instance attributes, which packs subclassing SaveImage or PreviewImage read and set: where and how
    # `save_images` writes ("output" or "temp"), what it appends to the prefix, the PNG compression
    type = "output"
    prefix_append = ""
    compress_level = 4

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI",
                                               "tooltip": "File name prefix; may start with subfolders (a/b/name)."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @property
    def output_dir(self) -> Path:
        """The folder of `type` in the current environment, unless a subclass set its own."""
        chosen = self.__dict__.get("_output_dir")
        if chosen is not None:
            return chosen
        folders = current_environment().folders
        return folders.temp_dir if self.type == "temp" else folders.output_dir

    @output_dir.setter
    def output_dir(self, folder: str | os.PathLike[str]) -> None:
        self.__dict__["_output_dir"] = Path(folder)

    def save_images(self, images: torch.Tensor, filename_prefix: str = "ComfyUI", prompt: Any = None,
                    extra_pnginfo: Any = None) -> dict[str, Any]:
        journal = SaveJournal.for_current_node(current_environment().folders.user_dir) if self.type == "output" \
            else None
        saved = save_images(images, self.output_dir, filename_prefix + self.prefix_append, self.type, prompt,
                            extra_pnginfo, compress_level=self.compress_level, journal=journal)
        return {"ui": {"images": saved}}


class PreviewImage(SaveImage):
    DESCRIPTION = "Shows images without keeping them: they are written to the temporary folder."
    type = "temp"
    compress_level = 1

    def __init__(self) -> None:
        self.prefix_append = "_temp_" + secrets.token_hex(3)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE", {"tooltip": "The images to preview."})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }


class ImageScale:
    DESCRIPTION = "Resizes images to a width and height (0 keeps the aspect ratio), optionally centre-cropping."
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    upscale_methods = list(resize.IMAGE_METHODS)  # ComfyUI's class attributes, which plugins read
    crop_methods = list(resize.CROP_MODES)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to resize."}),
            "upscale_method": (list(cls.upscale_methods), {"tooltip": "The interpolation method."}),
            "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1,
                              "tooltip": "Target width (0 follows the height)."}),
            "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1,
                               "tooltip": "Target height (0 follows the width)."}),
            "crop": (list(cls.crop_methods), {"tooltip": "Crop to the target aspect ratio first."}),
        }}

    def upscale(self, image: torch.Tensor, upscale_method: str, width: int, height: int,
                crop: str) -> tuple[torch.Tensor]:
        samples = image.movedim(-1, 1)
        return (resize.upscale(samples, width, height, upscale_method, crop).movedim(1, -1),)


def save_animation(images: torch.Tensor, filename_prefix: str, extension: str, write: Callable[[Any, list], None]) \
        -> dict[str, Any]:
    """All images as one animated file `<prefix>_<counter>_<extension>` in the output folder, written atomically
    by `write(handle, frames)` (frames as PIL images), with SaveImage's naming and re-run journal."""
    if images.ndim not in (3, 4) or len(images) == 0:
        raise ValueError(f"images: expected a non-empty IMAGE batch, got shape {tuple(images.shape)}")
    folders = current_environment().folders
    directory, subfolder, base = split_prefix(folders.output_dir, filename_prefix)
    directory.mkdir(parents=True, exist_ok=True)
    (name,), replace = plan_names(directory, base, 1, extension,
                                  SaveJournal.for_current_node(folders.user_dir))
    frames = [to_pil(image) for image in images]
    written = write_file(directory, name, base, replace, lambda handle: write(handle, frames))
    return {"ui": {"images": [{"filename": written, "subfolder": subfolder, "type": "output"}],
                   "animated": (len(frames) != 1,)}}


def _animation_inputs(extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": {
            "images": ("IMAGE", {"tooltip": "The frames, in order."}),
            "filename_prefix": ("STRING", {"default": "ComfyUI",
                                           "tooltip": "File name prefix; may start with subfolders (a/b/name)."}),
            "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01,
                              "tooltip": "Frames per second."}),
            **extra,
        },
        "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
    }


class SaveAnimatedWEBP:
    DESCRIPTION = "Saves the images as one animated WebP in the output folder, with the workflow in its EXIF data."
    CATEGORY = "image/animation"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save_images"
    METHODS = {"default": 4, "fastest": 0, "slowest": 6}

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _animation_inputs({
            "lossless": ("BOOLEAN", {"default": True, "tooltip": "Lossless compression."}),
            "quality": ("INT", {"default": 80, "min": 0, "max": 100,
                                "tooltip": "Lossy: image quality; lossless: compression effort."}),
            "method": (list(cls.METHODS), {"tooltip": "Encoder speed against file size."}),
        })

    def save_images(self, images: torch.Tensor, fps: float, filename_prefix: str, lossless: bool, quality: int,
                    method: str, prompt: Any = None, extra_pnginfo: Any = None) -> dict[str, Any]:
        def write(handle: Any, frames: list) -> None:
            exif = frames[0].getexif()
            if prompt is not None:
                exif[0x0110] = f"prompt:{json.dumps(prompt)}"  # the Model tag, as ComfyUI writes it
            if isinstance(extra_pnginfo, dict):
                for tag, (key, value) in zip(range(0x010F, 0, -1), extra_pnginfo.items()):  # Make, then downwards
                    exif[tag] = f"{key}:{json.dumps(value)}"
            frames[0].save(handle, format="WEBP", save_all=True, append_images=frames[1:],
                           duration=int(1000.0 / fps), exif=exif, lossless=lossless, quality=quality,
                           method=self.METHODS[method])

        return save_animation(images, filename_prefix, ".webp", write)


class SaveAnimatedPNG:
    DESCRIPTION = "Saves the images as one animated PNG (APNG) in the output folder, with the workflow embedded."
    CATEGORY = "image/animation"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save_images"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _animation_inputs({"compress_level": ("INT", {"default": 4, "min": 0, "max": 9,
                                                             "tooltip": "zlib compression level."})})

    def save_images(self, images: torch.Tensor, fps: float, compress_level: int, filename_prefix: str = "ComfyUI",
                    prompt: Any = None, extra_pnginfo: Any = None) -> dict[str, Any]:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        chunks = ([("prompt", prompt)] if prompt is not None else []) + \
            (list(extra_pnginfo.items()) if isinstance(extra_pnginfo, dict) else [])
        for key, value in chunks:  # ComfyUI's private `comf` chunks after the image data: key NUL json
            info.add(b"comf", str(key).encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1"),
                     after_idat=True)

        def write(handle: Any, frames: list) -> None:
            frames[0].save(handle, format="PNG", pnginfo=info, compress_level=compress_level, save_all=True,
                           duration=int(1000.0 / fps), append_images=frames[1:])

        return save_animation(images, filename_prefix, ".png", write)


class SaveImageAdvanced:
    DESCRIPTION = ("Saves images as 8- or 16-bit PNG files in the output folder, with the workflow embedded, and "
                   "passes them on; existing files are never replaced.")
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The images, unchanged.",)
    OUTPUT_NODE = True
    FUNCTION = "save_images"
    FORMATS = ("png", "exr", "avif")  # ComfyUI's choices; EXR and AVIF need encoders this install does not ship
    SCALES = {"8-bit": 255.0, "16-bit": 65535.0}

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        # ComfyUI's format shows only the chosen format's options; API prompts name them format.<name>
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI",
                                               "tooltip": "File name prefix; may start with subfolders (a/b/name)."}),
                "format": (list(cls.FORMATS), {"tooltip": "The file format (only png is written here)."}),
            },
            "optional": {
                "format.bit_depth": (list(cls.SCALES), {"default": "8-bit", "tooltip": "Bits per channel."}),
                "format.input_color_space": (["sRGB"], {"default": "sRGB",
                                                        "tooltip": "The images' colour space (sRGB)."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, format: str) -> bool | str:
        if format == "png":
            return True
        if format in cls.FORMATS:
            return f"format: {format!r} files cannot be written here (no {format.upper()} encoder); use png"
        return f"format: {format!r} is not one of {', '.join(cls.FORMATS)}"

    def save_images(self, images: torch.Tensor, filename_prefix: str, format: str, prompt: Any = None,
                    extra_pnginfo: Any = None, **format_options: Any) -> dict[str, Any]:
        from nodes import png16

        bit_depth = format_options.get("format.bit_depth") or "8-bit"
        if format != "png" or bit_depth not in self.SCALES:
            raise ValueError(f"format: cannot write {format} {bit_depth} files")
        if images.ndim not in (3, 4):
            raise ValueError(f"images: expected [batch, height, width, channels], got shape {tuple(images.shape)}")
        folders = current_environment().folders
        directory, subfolder, base = split_prefix(folders.output_dir, filename_prefix)
        directory.mkdir(parents=True, exist_ok=True)
        planned, replace = plan_names(directory, base, len(images), ".png",
                                      SaveJournal.for_current_node(folders.user_dir))
        metadata = _png_metadata(prompt, extra_pnginfo)  # the same text chunks for both depths
        texts = ([("prompt", json.dumps(prompt))] if prompt is not None else []) + \
            [(str(key), json.dumps(value)) for key, value in (extra_pnginfo or {}).items()]
        results = []
        for image, name in zip(images, planned):
            pixels = image if image.ndim == 3 else image.unsqueeze(-1)
            if bit_depth == "8-bit":
                written = _write_png(directory, name, base, to_pil(pixels), metadata, 4, replace)
            else:  # truncated to 0..65535, as ComfyUI quantizes
                array = (pixels.float() * 65535.0).clamp(0, 65535).to(torch.int32).cpu().numpy().astype(np.uint16)
                data = png16.encode(array, texts, compress_level=4)
                written = write_file(directory, name, base, replace, lambda handle, data=data: handle.write(data))
            results.append({"filename": written, "subfolder": subfolder, "type": "output"})
        return {"ui": {"images": results}, "result": (images,)}


OUTPUT_ANNOTATIONS = {"[output]": "output_dir", "[input]": "input_dir", "[temp]": "temp_dir"}


def annotated_path(name: str, input_name: str) -> Path:
    """The file a name like "sub/a.png [output]" means; without an annotation, a file in the output folder."""
    folders = current_environment().folders
    folder = folders.output_dir
    for annotation, attribute in OUTPUT_ANNOTATIONS.items():
        if name.endswith(annotation):
            name, folder = name[:-len(annotation)].rstrip(), getattr(folders, attribute)
            break
    return resolve_inside(folder, name, input_name)


class LoadImageOutput:
    DESCRIPTION = ("Loads an image from the output folder (names like \"ComfyUI_00001_.png [output]\"), to go on "
                   "working on a result; its mask is 1 where the image is transparent.")
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    OUTPUT_TOOLTIPS = LoadImage.OUTPUT_TOOLTIPS
    EXPERIMENTAL = True
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        output_dir = current_environment().folders.output_dir
        names = [f"{name} [output]" for name in current_environment().folders.listings.files(output_dir,
                                                                                               IMAGE_EXTENSIONS)]
        return {"required": {"image": (names, {
            "image_upload": True, "image_folder": "output",
            "remote": {"route": "/internal/files/output", "refresh_button": True, "control_after_refresh": "first"},
            "tooltip": "The image in the output folder."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        try:
            path = annotated_path(image, "image")
        except ValueError as error:
            return str(error)
        return True if path.is_file() else f"image: {image!r} is not a file"

    @classmethod
    def IS_CHANGED(cls, image: str) -> str:
        return hashlib.sha256(annotated_path(image, "image").read_bytes()).hexdigest()

    def load_image(self, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        return load_image_file(annotated_path(image, "image"), "image")


class ImageCompare:
    DESCRIPTION = "Compares two images side by side with a slider (both are previewed from the temporary folder)."
    CATEGORY = "image"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    EXPERIMENTAL = True
    FUNCTION = "compare"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"optional": {
            "image_a": ("IMAGE", {"tooltip": "The first image."}),
            "image_b": ("IMAGE", {"tooltip": "The second image."}),
            "compare_view": ("IMAGECOMPARE", {"tooltip": "The comparison slider (shown by the editor)."}),
        }}

    def compare(self, image_a: torch.Tensor | None = None, image_b: torch.Tensor | None = None,
                compare_view: Any = None) -> dict[str, Any]:
        folder = current_environment().folders.temp_dir
        shown = {}
        for key, images, prefix in (("a_images", image_a, "comfy.compare.a"), ("b_images", image_b, "comfy.compare.b")):
            shown[key] = [] if images is None or len(images) == 0 else \
                save_images(images, folder, f"{prefix}_temp_{secrets.token_hex(3)}", "temp", None, None,
                            compress_level=1)
        return {"ui": shown}


NODE_CLASS_MAPPINGS = {
    "LoadImage": LoadImage,
    "LoadImageOutput": LoadImageOutput,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "SaveImageAdvanced": SaveImageAdvanced,
    "SaveAnimatedWEBP": SaveAnimatedWEBP,
    "SaveAnimatedPNG": SaveAnimatedPNG,
    "ImageCompare": ImageCompare,
    "ImageScale": ImageScale,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadImage": "Load Image",
    "LoadImageOutput": "Load Image (from Outputs)",
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "SaveImageAdvanced": "Save Image (Advanced)",
    "SaveAnimatedWEBP": "SaveAnimatedWEBP",
    "SaveAnimatedPNG": "SaveAnimatedPNG",
    "ImageCompare": "Image Compare",
    "ImageScale": "Upscale Image",
}
