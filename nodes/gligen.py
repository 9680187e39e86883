"""GLIGEN nodes, ComfyUI's GLIGENLoader and GLIGENTextBoxApply: a GLIGEN text-box model from models/gligen, and
boxed phrases appended to conditioning so that an SD1.x model draws each phrase inside its box.

GLIGENTextBoxApply does to CONDITIONING what ComfyUI's does: every entry's `gligen` option becomes ("position",
GLIGEN, its earlier boxes + [(the phrase's pooled CLIP embedding, height // 8, width // 8, y // 8, x // 8)]), the
box in latent pixels. The sampler applies it (`diffusion.gligen`, through the SD family's sampling hooks); a
negative prompt without boxes is grounded with the positive's, as in ComfyUI. Knows nothing of HTTP or the
executor.
"""
from __future__ import annotations

from typing import Any

from diffusion.contracts import Conditioning
from diffusion.gligen import GLIGEN_OPTION, POSITION, Gligen, load_gligen
from nodes.environment import current_environment

MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION
LATENT_PIXEL = 8  # image pixels per latent pixel: ComfyUI stores the box divided by 8


class GLIGENLoader:
    DESCRIPTION = ("Loads a GLIGEN text-box model (gligen_sd14_textbox_pruned.safetensors) for SD1.x models: the "
                   "layers that let Apply GLIGEN place phrases in boxes.")
    CATEGORY = "loaders"
    RETURN_TYPES = ("GLIGEN",)
    OUTPUT_TOOLTIPS = ("The GLIGEN model, for GLIGENTextBoxApply.",)
    FUNCTION = "load_gligen"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("gligen")
        return {"required": {"gligen_name": (names, {"tooltip": "The GLIGEN file (models/gligen)."})}}

    def load_gligen(self, gligen_name: str) -> tuple[Gligen]:
        environment = current_environment()
        path = environment.folders.model_file("gligen", gligen_name, "gligen_name")
        return (load_gligen(environment.models, path, "gligen_name"),)


class GLIGENTextBoxApply:
    DESCRIPTION = ("Asks for a phrase inside a box of the image: the text is encoded with the CLIP and appended, "
                   "with the box, to every entry of the conditioning; chain several for several boxes (GLIGEN "
                   "takes up to 30). Works with SD1.x models.")
    CATEGORY = "conditioning/gligen"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The conditioning with the box appended to its GLIGEN boxes.",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        def size(name: str, default: int, low: int, what: str) -> tuple[str, dict[str, Any]]:
            return ("INT", {"default": default, "min": low, "max": MAX_RESOLUTION, "step": 8,
                            "tooltip": f"The box's {what} in image pixels ({name}; GLIGEN uses it divided by 8)."})

        return {"required": {
            "conditioning_to": ("CONDITIONING", {"tooltip": "The conditioning (usually the positive prompt) to "
                                                            "add the box to."}),
            "clip": ("CLIP", {"tooltip": "The SD1.x text encoder that encodes the phrase."}),
            "gligen_textbox_model": ("GLIGEN", {"tooltip": "The GLIGEN model, from GLIGENLoader."}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                "tooltip": "The phrase to place in the box."}),
            "width": size("width", 64, 8, "width"),
            "height": size("height", 64, 8, "height"),
            "x": size("x", 0, 0, "left edge"),
            "y": size("y", 0, 0, "top edge"),
        }}

    def append(self, conditioning_to: Conditioning, clip: Any, gligen_textbox_model: Gligen, text: str, width: int,
               height: int, x: int, y: int) -> tuple[Conditioning]:
        pooled = clip.encode_prompt(text)[0][1].get("pooled_output")
        expected = gligen_textbox_model.embedding_width
        if pooled is None or pooled.shape[-1] != expected:
            found = "no pooled text embedding" if pooled is None else f"{pooled.shape[-1]}-wide text embeddings"
            raise ValueError(f"clip: GLIGEN {gligen_textbox_model.name} takes {expected}-wide text embeddings (an "
                             f"SD1.x CLIP); this CLIP gives {found}")
        position = (pooled, height // LATENT_PIXEL, width // LATENT_PIXEL, y // LATENT_PIXEL, x // LATENT_PIXEL)
        result = []
        for entry in conditioning_to:
            options = dict(entry[1]) if len(entry) > 1 else {}
            previous = options.get(GLIGEN_OPTION)
            boxes = list(previous[2]) if previous is not None else []
            options[GLIGEN_OPTION] = (POSITION, gligen_textbox_model, boxes + [position])
            result.append([entry[0], options])
        return (result,)


NODE_CLASS_MAPPINGS = {"GLIGENLoader": GLIGENLoader, "GLIGENTextBoxApply": GLIGENTextBoxApply}
NODE_DISPLAY_NAME_MAPPINGS = {"GLIGENLoader": "GLIGENLoader", "GLIGENTextBoxApply": "GLIGENTextBoxApply"}
