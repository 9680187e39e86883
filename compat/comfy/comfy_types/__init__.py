"""`comfy.comfy_types` for plugins: the IO type names, the node base class and the INPUT_TYPES typing."""
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


__all__ = ["IO", "InputTypeDict", "ComfyNodeABC"]
