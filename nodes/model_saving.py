"""Saving nodes with ComfyUI's contracts (comfy_extras/nodes_model_merging.py, nodes_lora_extract.py):
CheckpointSave, ModelSave, VAESave and LoraSave write `.safetensors` files into the output folder.

What goes into a file is `diffusion.saving` (checkpoint layouts) and `diffusion.lora_extraction` (LoRAs by SVD);
this module places files: `filename_prefix` may name subfolders ("checkpoints/ComfyUI") but never leads out of
the output folder, the name is ComfyUI's `<prefix>_<counter:05>_.safetensors` with the next free counter, and each
file is written under a hidden temporary name and linked into place complete, never replacing another file (a
prompt run again after a crash replaces only what its own interrupted run wrote: `nodes.image.SaveJournal`).
The API prompt and the editor workflow go into the safetensors metadata as ComfyUI writes them (`prompt` and
each EXTRA_PNGINFO entry, JSON-encoded). Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import torch

from diffusion import lora_extraction, saving
from diffusion.components import DiffusionModel
from nodes.environment import current_environment
from nodes.image import SaveJournal, plan_names, split_prefix, write_file

CATEGORY = "advanced/model_merging"
EXTENSION = ".safetensors"
HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def _prefix_input(default: str) -> tuple[str, dict[str, Any]]:
    return ("STRING", {"default": default, "tooltip": "File name prefix inside the output folder; may start with "
                                                      "subfolders (a/b/name)."})


def prompt_metadata(prompt: Any, extra_pnginfo: Any) -> dict[str, str]:
    """The prompt and workflow as ComfyUI stores them in a saved model's metadata."""
    metadata = {"prompt": "" if prompt is None else json.dumps(prompt)}
    if isinstance(extra_pnginfo, dict):
        metadata.update({str(key): json.dumps(value) for key, value in extra_pnginfo.items()})
    return metadata


def write_safetensors(filename_prefix: str, state: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str]) -> dict[str, str]:
    """Write `state` as `<prefix>_<counter>_.safetensors` in the output folder, atomically, as SaveImage writes
    (the same naming and crash re-run journal); its UI entry."""
    from safetensors.torch import save_file

    folders = current_environment().folders
    directory, subfolder, base = split_prefix(folders.output_dir, filename_prefix)
    directory.mkdir(parents=True, exist_ok=True)
    journal = SaveJournal.for_current_node(folders.user_dir)
    (name,), replace = plan_names(directory, base, 1, EXTENSION, journal)
    if "modelspec.architecture" in metadata:  # ComfyUI titles a model-spec'd file "<name> <counter>"
        metadata = {**metadata, "modelspec.title": f"{base} {int(name[len(base) + 1:].split('_')[0])}"}
    tensors = {key: tensor.detach().contiguous().cpu() for key, tensor in state.items()}
    # safetensors writes by path: into the hidden file `write_file` opened, which it then syncs and links into place
    name = write_file(directory, name, base, replace,
                      lambda handle: save_file(tensors, handle.name, metadata=dict(metadata)))
    return {"filename": name, "subfolder": subfolder, "type": "output"}


class CheckpointSave:
    DESCRIPTION = ("Saves a model, its text encoder and VAE as one single-file checkpoint (original layout, the "
                   "one CheckpointLoaderSimple and ComfyUI load) in the output folder, LoRAs merged in, with the "
                   "workflow in its metadata. Stable Diffusion 1.x/2.x and SDXL.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model to save (a merge, a model with LoRAs, ...)."}),
                "clip": ("CLIP", {"tooltip": "The text encoder to save with it."}),
                "vae": ("VAE", {"tooltip": "The VAE to save with it."}),
                "filename_prefix": _prefix_input("checkpoints/ComfyUI"),
            },
            "hidden": HIDDEN,
        }

    def save(self, model: DiffusionModel, clip: Any, vae: Any, filename_prefix: str, prompt: Any = None,
             extra_pnginfo: Any = None) -> dict[str, Any]:
        state = saving.checkpoint_state(model, clip, vae)
        metadata = {**saving.checkpoint_metadata(model), **prompt_metadata(prompt, extra_pnginfo)}
        write_safetensors(filename_prefix, state, metadata)
        return {}


class ModelSave:
    DESCRIPTION = ("Saves the diffusion model alone (SD/SDXL UNet in the original layout, FLUX transformer in "
                   "diffusers layout) in the output folder, LoRAs merged in, with the workflow in its metadata.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model to save."}),
                "filename_prefix": _prefix_input("diffusion_models/ComfyUI"),
            },
            "hidden": HIDDEN,
        }

    def save(self, model: DiffusionModel, filename_prefix: str, prompt: Any = None,
             extra_pnginfo: Any = None) -> dict[str, Any]:
        state = saving.diffusion_model_state(model)
        metadata = {**saving.checkpoint_metadata(model), **prompt_metadata(prompt, extra_pnginfo)}
        write_safetensors(filename_prefix, state, metadata)
        return {}


class VAESave:
    DESCRIPTION = ("Saves a VAE alone in the original layout (what VAELoader loads) in the output folder, with the "
                   "workflow in its metadata.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "vae": ("VAE", {"tooltip": "The VAE to save."}),
                "filename_prefix": _prefix_input("vae/ComfyUI_vae"),
            },
            "hidden": HIDDEN,
        }

    def save(self, vae: Any, filename_prefix: str, prompt: Any = None, extra_pnginfo: Any = None) -> dict[str, Any]:
        write_safetensors(filename_prefix, saving.vae_ldm_state(vae, ""), prompt_metadata(prompt, extra_pnginfo))
        return {}


class LoraSave:
    DESCRIPTION = ("Extracts a LoRA from a difference model (ModelMergeSubtract: the fine-tune minus its base) by "
                   "truncated SVD, as ComfyUI does, and saves it in kohya's layout in the output folder; load it "
                   "with LoraLoader onto the base (here or in ComfyUI), whole differences (full_diff, bias_diff) "
                   "included.")
    CATEGORY = "_for_testing"
    EXPERIMENTAL = True
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "filename_prefix": _prefix_input("loras/ComfyUI_extracted_lora"),
                "rank": ("INT", {"default": 8, "min": 1, "max": 4096, "step": 1,
                                 "tooltip": "The LoRA rank: higher keeps more of the difference, in a bigger file."}),
                "lora_type": (list(lora_extraction.LORA_TYPES), {
                    "tooltip": "standard: low-rank factors; full_diff: the whole weight differences."}),
                "bias_diff": ("BOOLEAN", {"default": True, "tooltip": "Also store the bias and norm differences."}),
            },
            "optional": {
                "model_diff": ("MODEL", {"tooltip": "The ModelSubtract output to be converted to a lora."}),
                "text_encoder_diff": ("CLIP", {"tooltip": "The CLIPSubtract output to be converted to a lora."}),
            },
        }

    def save(self, filename_prefix: str, rank: int, lora_type: str, bias_diff: bool,
             model_diff: DiffusionModel | None = None, text_encoder_diff: Any = None) -> dict[str, Any]:
        if model_diff is None and text_encoder_diff is None:
            return {}
        state = lora_extraction.extract_lora(model_diff, text_encoder_diff, rank, lora_type, bias_diff)
        write_safetensors(filename_prefix, state, {})
        return {}


NODE_CLASS_MAPPINGS = {
    "CheckpointSave": CheckpointSave,
    "ModelSave": ModelSave,
    "VAESave": VAESave,
    "LoraSave": LoraSave,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CheckpointSave": "Save Checkpoint",
    "ModelSave": "ModelSave",
    "VAESave": "VAESave",
    "LoraSave": "Extract and Save Lora",
}
