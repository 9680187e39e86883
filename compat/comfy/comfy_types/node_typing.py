"""`comfy.comfy_types.node_typing` for plugins: socket type names, the typing of INPUT_TYPES and the node base
classes that ComfyUI's packs (and its own testing pack) import. Typing helpers only: what a node declares with them
is read by the engine like any other node class."""
from __future__ import annotations

from abc import ABC
from enum import Enum
from typing import Any, Literal, TypedDict


class StrEnum(str, Enum):
    def __str__(self) -> str:
        return self.value


class IO(StrEnum):
    """Socket type names; compare equal to their strings, so `IO.IMAGE == "IMAGE"`."""

    STRING = "STRING"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    BOOLEAN = "BOOLEAN"
    INT = "INT"
    FLOAT = "FLOAT"
    COMBO = "COMBO"
    CONDITIONING = "CONDITIONING"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    GUIDER = "GUIDER"
    NOISE = "NOISE"
    CLIP = "CLIP"
    CONTROL_NET = "CONTROL_NET"
    VAE = "VAE"
    MODEL = "MODEL"
    LORA_MODEL = "LORA_MODEL"
    LOSS_MAP = "LOSS_MAP"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    STYLE_MODEL = "STYLE_MODEL"
    GLIGEN = "GLIGEN"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    AUDIO = "AUDIO"
    WEBCAM = "WEBCAM"
    POINT = "POINT"
    FACE_ANALYSIS = "FACE_ANALYSIS"
    BBOX = "BBOX"
    SEGS = "SEGS"
    VIDEO = "VIDEO"
    ANY = "*"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"


class InputTypeDict(TypedDict, total=False):
    required: dict[str, tuple[Any, ...]]
    optional: dict[str, tuple[Any, ...]]
    hidden: dict[str, Literal["PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "DYNPROMPT"]]


class ComfyNodeABC(ABC):
    """The node-class contract as a base class; every attribute is optional but INPUT_TYPES and FUNCTION."""

    DESCRIPTION: str = ""
    CATEGORY: str = ""
    RETURN_TYPES: tuple = ()
    RETURN_NAMES: tuple | None = None
    OUTPUT_IS_LIST: tuple | None = None
    OUTPUT_TOOLTIPS: tuple | None = None
    FUNCTION: str = ""
    OUTPUT_NODE: bool = False
    INPUT_IS_LIST: bool = False
    DEPRECATED: bool = False
    EXPERIMENTAL: bool = False

    @classmethod
    def INPUT_TYPES(cls) -> InputTypeDict:
        return {"required": {}}


class InputTypeOptions(TypedDict, total=False):
    """The options dict of one input (the second item of its INPUT_TYPES tuple)."""

    default: Any
    defaultInput: bool
    forceInput: bool
    lazy: bool
    rawLink: bool
    tooltip: str
    socketless: bool
    widgetType: str
    min: float
    max: float
    step: float
    round: float
    label_on: str
    label_off: str
    multiline: bool
    placeholder: str
    dynamicPrompts: bool
    image_upload: bool
    image_folder: Literal["input", "output", "temp"]
    control_after_generate: bool
    options: list[Any]


class HiddenInputTypeDict(TypedDict, total=False):
    """The hidden inputs a node may ask for, each filled by the executor."""

    node_id: Literal["UNIQUE_ID"]
    unique_id: Literal["UNIQUE_ID"]
    prompt: Literal["PROMPT"]
    extra_pnginfo: Literal["EXTRA_PNGINFO"]
    dynprompt: Literal["DYNPROMPT"]


class CheckLazyMixin:
    """A `check_lazy_status` that asks for every lazy input not evaluated yet (the executor passes those as None)."""

    def check_lazy_status(self, **inputs: Any) -> list[str]:
        return [name for name, value in inputs.items() if value is None]


class FileLocator(TypedDict):
    """Where a file a node shows or saves lives: its name, subfolder and root ("input", "output" or "temp")."""

    filename: str
    subfolder: str
    type: Literal["input", "output", "temp"]


__all__ = ["IO", "InputTypeDict", "InputTypeOptions", "HiddenInputTypeDict", "ComfyNodeABC", "CheckLazyMixin",
           "FileLocator", "StrEnum"]
