"""SD2.1 unCLIP, ComfyUI's way: unCLIPCheckpointLoader (MODEL, CLIP, VAE and the image encoder, CLIP_VISION, of one
sd21-unclip-h/-l checkpoint) and unCLIPConditioning (an encoded image appended to a prompt's conditioning, which
the unCLIP UNet takes as its image embedding). An image goes through CLIPVisionEncode (`nodes.clip_vision`) with
the checkpoint's CLIP_VISION; KSampler and the custom samplers then run the model as any SD2 model. Thin classes
over `diffusion.families.sd` (`loading.load_unclip_checkpoint`; `sampling` augments the image embedding).
Knows nothing of HTTP.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.components import DiffusionModel, Vae
from diffusion.contracts import Conditioning
from diffusion.encoders.clip_vision import ClipVisionEncoder, ClipVisionOutput
from diffusion.families.sd.loading import load_unclip_checkpoint
from diffusion.families.sd.sampling import UNCLIP_OPTION
from diffusion.families.sd.text_encoding import SdClip
from diffusion.files import read_safetensors
from diffusion.loading import file_family
from nodes.environment import current_environment
from nodes.model_facts import family_facts


class unCLIPCheckpointLoader:
    DESCRIPTION = ("Loads an SD2.1 unCLIP checkpoint (sd21-unclip-h or sd21-unclip-l): the UNet that also takes a "
                   "CLIP image embedding, the text encoder, the VAE and the image encoder the checkpoint carries.")
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE", "CLIP_VISION")
    OUTPUT_TOOLTIPS = ("The denoising model (UNet), which takes image embeddings from unCLIPConditioning.",
                       "The text encoder for prompts.", "The VAE that turns latents into images and back.",
                       "The checkpoint's image encoder, for CLIPVisionEncode.")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("checkpoints")
        return {"required": {"ckpt_name": (names, {"tooltip": "The unCLIP checkpoint file in models/checkpoints."})}}

    @classmethod
    def OUTPUT_FACTS(cls, input_facts: dict[str, Any], ckpt_name: str) -> tuple[Any, ...]:
        path = current_environment().folders.model_file("checkpoints", ckpt_name, "ckpt_name")
        return (*family_facts(file_family(path, "ckpt_name"), 3), None)

    def load_checkpoint(self, ckpt_name: str) -> tuple[DiffusionModel, SdClip, Vae, ClipVisionEncoder]:
        environment = current_environment()
        path = environment.folders.model_file("checkpoints", ckpt_name, "ckpt_name")
        return load_unclip_file(environment.models, path, "ckpt_name")


def load_unclip_file(models: Any, path: Path, input_name: str) -> tuple[DiffusionModel, SdClip, Vae,
                                                                        ClipVisionEncoder]:
    """MODEL, CLIP, VAE and CLIP_VISION of an unCLIP checkpoint file, cached by the model manager (`models`)."""

    def load() -> tuple[DiffusionModel, SdClip, Vae, ClipVisionEncoder]:
        state = read_safetensors(path, input_name, models.dtype)
        try:
            return load_unclip_checkpoint(state, path.name, models.place)
        except ValueError as error:
            raise ValueError(f"{input_name}: {path.name}: {error}") from error

    return models.cached("unclip-checkpoint", path, input_name, load)


class unCLIPConditioning:
    DESCRIPTION = ("Adds an encoded image to every entry of the conditioning, for an SD2.1 unCLIP model: the image's "
                   "CLIP embedding, noised by noise_augmentation, steers the picture towards the image. Several can "
                   "be chained; their embeddings are summed by strength.")
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The conditioning with the image embedding appended to its unCLIP images.",)
    FUNCTION = "apply_adm"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning": ("CONDITIONING", {"tooltip": "The prompt's conditioning (the unCLIP checkpoint's CLIP)."}),
            "clip_vision_output": ("CLIP_VISION_OUTPUT", {
                "tooltip": "The encoded image (CLIPVisionEncode with the unCLIP checkpoint's CLIP_VISION)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                   "tooltip": "How strongly the image steers the result (0 leaves the conditioning "
                                              "unchanged; negative pushes away from the image)."}),
            "noise_augmentation": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                             "tooltip": "How much noise is added to the image embedding: higher "
                                                        "values keep less of the image and vary more."}),
        }}

    def apply_adm(self, conditioning: Conditioning, clip_vision_output: ClipVisionOutput, strength: float,
                  noise_augmentation: float) -> tuple[Conditioning]:
        if strength == 0:
            return (conditioning,)
        if getattr(clip_vision_output, "image_embeds", None) is None:
            raise ValueError("clip_vision_output: it has no image embedding (an encoder without a projection, such "
                             "as SigLIP); encode the image with the unCLIP checkpoint's CLIP_VISION")
        item = {"clip_vision_output": clip_vision_output, "strength": strength,
                "noise_augmentation": noise_augmentation}
        out = []
        for entry in conditioning:
            options = dict(entry[1]) if len(entry) > 1 else {}
            options[UNCLIP_OPTION] = [*options.get(UNCLIP_OPTION, ()), item]
            out.append([entry[0], options])
        return (out,)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "unCLIPCheckpointLoader": unCLIPCheckpointLoader,
    "unCLIPConditioning": unCLIPConditioning,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "unCLIPCheckpointLoader": "unCLIPCheckpointLoader",
    "unCLIPConditioning": "unCLIPConditioning",
}
