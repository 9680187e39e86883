"""The model families this project understands (SD1.x, SD2.x, SDXL, SD3), described by JSON files in `configs/`.

Each file gives the family's original LDM parameters, text-encoder and tokenizer settings and scheduler config:
the facts a checkpoint's tensors cannot tell. Knows nothing of files other than those configs.
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"
FAMILIES = ("sd1", "sd2", "sdxl", "sd3")
V_PREDICTION_MARKER = "v_pred"  # the key ComfyUI stores in v-prediction checkpoints


@functools.lru_cache(maxsize=None)
def _read(family: str) -> dict[str, Any]:
    return json.loads((CONFIG_DIR / f"{family}.json").read_text())


def family_config(family: str) -> dict[str, Any]:
    """A fresh copy of a family's description (callers may modify it)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return copy.deepcopy(_read(family))


def scheduler_config(family: str, prediction_type: str) -> dict[str, Any]:
    """The family's diffusers scheduler config (without the class name) for a prediction type."""
    config = {key: value for key, value in family_config(family)["scheduler"].items() if not key.startswith("_")}
    config["prediction_type"] = prediction_type
    return config
