"""Loader nodes: checkpoints, diffusers folders, diffusion models alone, text encoder files (CLIPLoader,
DualCLIPLoader, TripleCLIPLoader under ComfyUI's `type` names), VAEs and LoRAs from the
current environment's models folder, for every model family.

Each node is a thin ComfyUI-style class over `diffusion.loading` (which finds the file's family in the registry
and lets the family's loader read it; the model manager caches the result); LoRA application is in
`diffusion.lora`. Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

from typing import Any

from diffusion import loading, registry
from diffusion.components import DiffusionModel
from diffusion.contracts import LoraPatch, TextEncoder, VaeModel
from diffusion.gguf import GGUF_SUFFIX
from diffusion.lora import lora_applied, lora_targets
from diffusion.weight_storage import WEIGHT_DTYPES
from nodes.environment import CHECKPOINT_EXTENSIONS, current_environment
from nodes.model_facts import family_facts

STRENGTH = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}


def _model_file(kind: str, name: str, input_name: str):
    return current_environment().folders.model_file(kind, name, input_name)


class CheckpointLoaderSimple:
    DESCRIPTION = ("Loads a single-file checkpoint (.safetensors, original layout): Stable Diffusion 1.x/2.x, SDXL "
                   "base or refiner, or SD3; the family and prediction type are detected from the tensors.")
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = ("The denoising model (UNet).", "The text encoder for prompts.",
                       "The VAE that turns latents into images and back.")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("checkpoints")
        return {"required": {"ckpt_name": (names, {"tooltip": "The checkpoint file in models/checkpoints."})}}

    @classmethod
    def OUTPUT_FACTS(cls, input_facts: dict[str, Any], ckpt_name: str) -> tuple[Any, ...]:
        path = _model_file("checkpoints", ckpt_name, "ckpt_name")
        return family_facts(loading.file_family(path, "ckpt_name"), len(cls.RETURN_TYPES))

    @classmethod
    def READ_AHEAD(cls, ckpt_name: str) -> None:
        """Start reading the file before the node runs (see `app.runtime.Runtime.read_ahead`)."""
        path = _model_file("checkpoints", ckpt_name, "ckpt_name")
        environment = current_environment()
        loading.read_ahead(environment.read_ahead, environment.models, "checkpoint", path, "ckpt_name")

    def load_checkpoint(self, ckpt_name: str) -> tuple[DiffusionModel, TextEncoder, VaeModel]:
        path = _model_file("checkpoints", ckpt_name, "ckpt_name")
        environment = current_environment()
        return loading.load_checkpoint(environment.models, path, "ckpt_name", environment.read_ahead)


class DiffusersLoader:
    DESCRIPTION = ("Loads a model saved in diffusers format (a folder with model_index.json): Stable Diffusion, "
                   "SDXL, SD3 or FLUX, detected from the folder.")
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_diffusers_models()
        return {"required": {"model_path": (names, {"tooltip": "The model folder in models/diffusers."})}}

    @classmethod
    def OUTPUT_FACTS(cls, input_facts: dict[str, Any], model_path: str) -> tuple[Any, ...]:
        folder = _model_file("diffusers", model_path, "model_path")
        return family_facts(loading.folder_family(folder), len(cls.RETURN_TYPES))

    def load_checkpoint(self, model_path: str) -> tuple[DiffusionModel, TextEncoder, VaeModel]:
        folder = _model_file("diffusers", model_path, "model_path")
        return loading.load_diffusers(current_environment().models, folder, "model_path")


class VAELoader:
    DESCRIPTION = "Loads a standalone VAE (.safetensors in the original layout) to use instead of a checkpoint's."
    CATEGORY = "loaders"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load_vae"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("vae")
        return {"required": {"vae_name": (names, {"tooltip": "The VAE file in models/vae."})}}

    def load_vae(self, vae_name: str) -> tuple[VaeModel]:
        path = _model_file("vae", vae_name, "vae_name")
        return (loading.load_vae(current_environment().models, path, "vae_name"),)


class UNETLoader:
    DESCRIPTION = ("Loads a diffusion model file alone (a transformer of the families this engine runs, in their "
                   "published layouts) from models/diffusion_models; pair it with the family's CLIP loader and "
                   "VAELoader. GGUF-quantized files (.gguf, as ComfyUI-GGUF's UnetLoaderGGUF reads them) load too "
                   "and stay quantized in memory.")
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_unet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("diffusion_models", CHECKPOINT_EXTENSIONS + (GGUF_SUFFIX,))
        return {"required": {
            "unet_name": (names, {"tooltip": "The model file in models/diffusion_models."}),
            "weight_dtype": (list(WEIGHT_DTYPES), {
                "tooltip": "The precision the weights are kept in. default: the device's (--fp16/--bf16/--fp32). "
                           "fp8_e4m3fn, fp8_e5m2: the layers' weights stored in fp8 (half of bf16's memory) and "
                           "cast to the device's precision while each layer runs (norms and embeddings stay in it); "
                           "fp8_e4m3fn_fast stores them the same way."}),
        }}

    @classmethod
    def OUTPUT_FACTS(cls, input_facts: dict[str, Any], unet_name: str, **widgets: Any) -> tuple[Any, ...]:
        path = _model_file("diffusion_models", unet_name, "unet_name")
        return family_facts(loading.file_family(path, "unet_name"), 1)

    @classmethod
    def READ_AHEAD(cls, unet_name: str, weight_dtype: str = "default") -> None:
        """Start reading the file before the node runs (see `app.runtime.Runtime.read_ahead`)."""
        path = _model_file("diffusion_models", unet_name, "unet_name")
        environment = current_environment()
        loading.read_ahead(environment.read_ahead, environment.models, "diffusion_model", path, "unet_name",
                           weight_dtype)

    def load_unet(self, unet_name: str, weight_dtype: str = "default") -> tuple[DiffusionModel]:
        path = _model_file("diffusion_models", unet_name, "unet_name")
        environment = current_environment()
        return (loading.load_diffusion_model(environment.models, path, "unet_name", weight_dtype,
                                             environment.read_ahead),)


def _text_encoder_paths(names: dict[str, str]) -> dict[str, Any]:
    folders = current_environment().folders
    return {input_name: folders.model_file("text_encoders", file_name, input_name)
            for input_name, file_name in names.items()}


# ComfyUI's `type` choices; the families this engine runs are in `diffusion.registry` (`clip_types`), the others
# are refused at validation with the model family they are for.
CLIP_LOADER_TYPES = {
    "stable_diffusion": None, "stable_cascade": "Stable Cascade", "sd3": None, "stable_audio": "Stable Audio",
    "mochi": "Mochi", "ltxv": "LTX-Video", "pixart": "PixArt", "cosmos": "Cosmos", "lumina2": None,
    "wan": "Wan", "hidream": None, "chroma": None, "ace": "ACE-Step", "omnigen2": "OmniGen2",
    "qwen_image": None, "hunyuan_image": "HunyuanImage", "flux2": None}
DUAL_CLIP_TYPES = {"sdxl": None, "sd3": None, "flux": None, "hunyuan_video": "HunyuanVideo", "hidream": None,
                   "hunyuan_image": "HunyuanImage"}
DEVICE_INPUT = (["default", "cpu"], {
    "advanced": True,
    "tooltip": "Accepted for ComfyUI workflows; the text encoders run where the model manager places every model "
               "(the engine's device, offloaded to the CPU when memory is tight)."})


def _type_problem(types: dict[str, str | None], clip_type: str) -> bool | str:
    """True, or why a `type` of ComfyUI's is refused (a model family this engine does not run)."""
    family = types.get(clip_type)
    if family is None:
        return True
    supported = ", ".join(name for name, other in types.items() if other is None)
    return (f"type: {clip_type!r} text encoders are for {family} models, which this engine does not run; "
            f"supported types: {supported}")


class CLIPLoader:
    DESCRIPTION = ("Loads one text encoder file from models/text_encoders as a CLIP. stable_diffusion: an SD1 "
                   "CLIP-L (an OpenCLIP-G file gives the SDXL refiner's CLIP, an OpenCLIP-H file SD2's); sd3: a "
                   "CLIP-L, CLIP-G or T5-XXL alone (the missing encoders count as zeros, as in ComfyUI); chroma: "
                   "Chroma's T5-XXL; lumina2: Lumina 2's Gemma 2, or Z-Image's Qwen3; qwen_image: Qwen-Image's "
                   "Qwen2.5-VL, or Qwen-Image 2.1's Qwen3-VL; flux2: FLUX.2 [klein]'s Qwen3 or [dev]'s Mistral; "
                   "hidream: one of HiDream's four (the others count as zeros). Types of model families this engine "
                   "does not run are refused when the prompt is validated.")
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    OUTPUT_TOOLTIPS = ("The text encoder for prompts.",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("text_encoders")
        return {
            "required": {
                "clip_name": (names, {"tooltip": "The text encoder file in models/text_encoders."}),
                "type": (list(CLIP_LOADER_TYPES), {"tooltip": "The model family the encoder is for."}),
            },
            "optional": {"device": DEVICE_INPUT},
        }

    ENGINE_CHECKS_ALL_INPUTS = True  # VALIDATE_INPUTS(**widgets) adds to the range and choice checks

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets: Any) -> bool | str:
        return _type_problem(CLIP_LOADER_TYPES, widgets.get("type", "stable_diffusion"))

    @classmethod
    def OUTPUT_FACTS(cls, input_facts: dict[str, Any], clip_name: str, type: str, **widgets: Any) -> tuple[Any, ...]:
        paths = _text_encoder_paths({"clip_name": clip_name})
        return family_facts(loading.text_encoders_family_name(type, paths), 1)

    def load_clip(self, clip_name: str, type: str = "stable_diffusion", device: str = "default") -> tuple[TextEncoder]:
        paths = _text_encoder_paths({"clip_name": clip_name})
        return (loading.load_text_encoders(current_environment().models, type, paths),)


class DualCLIPLoader:
    DESCRIPTION = ("Loads two text encoder files from models/text_encoders as one CLIP, in either order. sdxl: "
                   "CLIP-L and CLIP-G; sd3: two of CLIP-L, CLIP-G and T5-XXL (the third counts as zeros, as in "
                   "ComfyUI); flux: CLIP-L and T5-XXL; hidream: two of HiDream's four (the others count as "
                   "zeros). Types of model families this engine does not run are refused when the prompt is "
                   "validated.")
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    OUTPUT_TOOLTIPS = ("The text encoders for prompts, as one CLIP.",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("text_encoders")
        return {
            "required": {
                "clip_name1": (names, {"tooltip": "The first text encoder file."}),
                "clip_name2": (names, {"tooltip": "The second text encoder file."}),
                "type": (list(DUAL_CLIP_TYPES), {"tooltip": "The model family the encoders are for."}),
            },
            "optional": {"device": DEVICE_INPUT},
        }

    ENGINE_CHECKS_ALL_INPUTS = True  # VALIDATE_INPUTS(**widgets) adds to the range and choice checks

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets: Any) -> bool | str:
        return _type_problem(DUAL_CLIP_TYPES, widgets.get("type", "sdxl"))

    @classmethod
    def OUTPUT_FACTS(cls, input_facts: dict[str, Any], type: str, **widgets: Any) -> tuple[Any, ...]:
        return family_facts(registry.clip_type_family(type).name, 1)

    def load_clip(self, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> tuple[TextEncoder]:
        paths = _text_encoder_paths({"clip_name1": clip_name1, "clip_name2": clip_name2})
        return (loading.load_text_encoders(current_environment().models, type, paths),)


class TripleCLIPLoader:
    DESCRIPTION = ("Loads SD3's text encoders from three files in models/text_encoders: CLIP-L, CLIP-G and T5-XXL "
                   "(recognised from their tensors, in any order).")
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("text_encoders")
        return {"required": {
            "clip_name1": (names, {"tooltip": "A text encoder file (CLIP-L)."}),
            "clip_name2": (names, {"tooltip": "A text encoder file (CLIP-G)."}),
            "clip_name3": (names, {"tooltip": "A text encoder file (T5-XXL)."}),
        }}

    @classmethod
    def OUTPUT_FACTS(cls, input_facts: dict[str, Any], **widgets: Any) -> tuple[Any, ...]:
        return family_facts(registry.clip_type_family("sd3").name, 1)

    def load_clip(self, clip_name1: str, clip_name2: str, clip_name3: str) -> tuple[TextEncoder]:
        paths = _text_encoder_paths({"clip_name1": clip_name1, "clip_name2": clip_name2, "clip_name3": clip_name3})
        return (loading.load_text_encoders(current_environment().models, "sd3", paths),)


class QuadrupleCLIPLoader:
    DESCRIPTION = ("Loads HiDream's four text encoders from models/text_encoders as one CLIP: CLIP-L, CLIP-G, T5-XXL "
                   "and Llama 3.1 8B Instruct (recognised from their tensors, in any order).")
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("text_encoders")
        return {"required": {
            "clip_name1": (names, {"tooltip": "A text encoder file (CLIP-L)."}),
            "clip_name2": (names, {"tooltip": "A text encoder file (CLIP-G)."}),
            "clip_name3": (names, {"tooltip": "A text encoder file (T5-XXL)."}),
            "clip_name4": (names, {"tooltip": "A text encoder file (Llama 3.1)."}),
        }}

    @classmethod
    def OUTPUT_FACTS(cls, input_facts: dict[str, Any], **widgets: Any) -> tuple[Any, ...]:
        return family_facts(registry.clip_type_family("hidream").name, 1)

    def load_clip(self, clip_name1: str, clip_name2: str, clip_name3: str, clip_name4: str) -> tuple[TextEncoder]:
        paths = _text_encoder_paths({"clip_name1": clip_name1, "clip_name2": clip_name2, "clip_name3": clip_name3,
                                     "clip_name4": clip_name4})
        return (loading.load_text_encoders(current_environment().models, "hidream", paths),)


def _lora_patch(lora_name: str, strength: float, family: str) -> LoraPatch:
    """The LoRA file read with the key conventions of the family it is applied to."""
    path = _model_file("loras", lora_name, "lora_name")
    state, alphas = loading.load_lora(current_environment().models, path, family, "lora_name")
    patch = LoraPatch(lora_name, state, alphas, strength)
    if not any(lora_targets(patch).values()):
        raise ValueError(f"lora_name: {lora_name} matches no UNet, transformer or text encoder layers")
    return patch


def _check_fits(module: Any, component: str, patch: LoraPatch) -> None:
    """Inject and remove the LoRA once, so a LoRA for another architecture fails here, naming the input."""
    try:
        with lora_applied(module, component, [patch]):
            pass
    except ValueError as error:
        raise ValueError(f"lora_name: {error}") from error


def lora_model(model: DiffusionModel, lora_name: str, strength: float, required: bool) -> DiffusionModel:
    """A MODEL that applies the LoRA's UNet part at `strength` while it computes (unchanged at strength 0)."""
    if strength == 0:
        return model
    return model_with_lora(model, _lora_patch(lora_name, strength, model.family), required)


def model_with_lora(model: DiffusionModel, patch: LoraPatch, required: bool) -> DiffusionModel:
    """`model` applying the patch's UNet (or transformer) part; unchanged, or with `required` a ValueError, when
    the patch has none."""
    component = model.lora_component
    if not lora_targets(patch)[component]:
        if required:
            raise ValueError(f"lora_name: {patch.name} has no {component} layers")
        return model
    _check_fits(model.network, component, patch)
    return model.with_lora(patch)


def lora_clip(clip: TextEncoder, lora_name: str, strength: float) -> TextEncoder:
    """A CLIP that applies the LoRA's text-encoder part at `strength` while it encodes."""
    if strength == 0:
        return clip
    return clip_with_lora(clip, _lora_patch(lora_name, strength, clip.family))


def clip_with_lora(clip: TextEncoder, patch: LoraPatch) -> TextEncoder:
    """`clip` applying the patch's text-encoder part; unchanged when the patch has none."""
    targets = lora_targets(patch)
    modules = [(component, module) for component, module in clip.lora_modules() if targets[component]]
    if not modules:
        return clip
    for component, module in modules:
        _check_fits(module, component, patch)
    return clip.with_lora(patch)


class LoraLoader:
    DESCRIPTION = ("Applies a LoRA (kohya or diffusers layout) to a model and its text encoder. The loaded base "
                   "model is not changed: other nodes using it still see it without the LoRA.")
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The model with the LoRA applied.", "The text encoder with the LoRA applied.")
    FUNCTION = "load_lora"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("loras")
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model the LoRA is applied to."}),
            "clip": ("CLIP", {"tooltip": "The text encoder the LoRA is applied to."}),
            "lora_name": (names, {"tooltip": "The LoRA file in models/loras."}),
            "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "How strongly to change the model; 0 leaves it."}),
            "strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "How strongly to change the text encoder."}),
        }}

    def load_lora(self, model: DiffusionModel, clip: TextEncoder, lora_name: str, strength_model: float,
                  strength_clip: float) -> tuple[DiffusionModel, TextEncoder]:
        return lora_model(model, lora_name, strength_model, False), lora_clip(clip, lora_name, strength_clip)


class LoraLoaderModelOnly:
    DESCRIPTION = "Applies a LoRA to the model (UNet) only; the loaded base model is not changed."
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("loras")
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model the LoRA is applied to."}),
            "lora_name": (names, {"tooltip": "The LoRA file in models/loras."}),
            "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "How strongly to change the model; 0 leaves it."}),
        }}

    def load_lora_model_only(self, model: DiffusionModel, lora_name: str,
                             strength_model: float) -> tuple[DiffusionModel]:
        return (lora_model(model, lora_name, strength_model, True),)
