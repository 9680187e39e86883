"""ComfyUI's CLIP object API (the methods node packs call on a CLIP input) over a family's CLIP value.

`ComfyClipApi` is mixed into the families' CLIP values (SD1/SD2, SDXL, SD3, FLUX): a family supplies
`tokenize_prompt(text, word_ids)` (ComfyUI's tokens dict: encoder key -> chunks of (token, weight[, word id])
tuples) and `encode_tokens(tokens)` (CONDITIONING), and its `encode_prompt` is
`encode_tokens(tokenize_prompt(text))`, so a pack's `clip.encode_from_tokens_scheduled(clip.tokenize(text))` gives
exactly what CLIPTextEncode gives. ComfyUI names that need its ModelPatcher internals are answered with an
AttributeError saying why (`UNSUPPORTED`). Knows nothing of nodes, files or the compat modules.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch

from diffusion.contracts import Conditioning
from diffusion.lazy_module import resolve

Tokens = Mapping[str, list[list[tuple[Any, ...]]]]

_PATCHER = ("ComfyUI's ModelPatcher internals; nodeflow's CLIP values hold transformers modules, shared with the "
            "model cache and never patched in place")
UNSUPPORTED = {
    "patcher": _PATCHER,
    "load_model": "the model manager places text encoders itself when they encode; there is no patcher to load",
}


class ClipModelView:
    """`clip.cond_stage_model` as packs read it for LoRA key maps: `state_dict()` under ComfyUI's keys. Other
    attributes of ComfyUI's text-encoder modules are not there (an AttributeError names them)."""

    def __init__(self, clip: Any) -> None:
        self._clip = clip

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._clip.get_sd()

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"clip.cond_stage_model.{name}: not supported by nodeflow: {_PATCHER}")


class ComfyClipApi:
    """ComfyUI's `comfy.sd.CLIP` methods, for a frozen dataclass CLIP value defining `tokenize_prompt`,
    `encode_tokens`, `with_layer` and `parts`."""

    # keyword options of ComfyUI's tokenizers that this CLIP's `tokenize_prompt` takes (Qwen-Image's: images)
    TOKENIZE_OPTIONS: tuple[str, ...] = ()

    def tokenize(self, text: str, return_word_ids: bool = False,
                 **options: Any) -> dict[str, list[list[tuple[Any, ...]]]]:
        """ComfyUI's `CLIP.tokenize`: {encoder key ("l", "g", "h"): 77-token chunks of (token id, weight) pairs,
        or (token id, weight, word id) triples with `return_word_ids`}, ComfyUI's emphasis syntax applied; the
        keyword options the family's tokenizer takes (`TOKENIZE_OPTIONS`) are passed on."""
        unknown = sorted(set(options) - set(self.TOKENIZE_OPTIONS))
        if unknown:
            raise RuntimeError(f"clip.tokenize: {', '.join(unknown)} not supported by nodeflow for this CLIP "
                               f"({type(self).__name__})")
        return self.tokenize_prompt(text, return_word_ids, **options)

    def encode_from_tokens(self, tokens: Tokens, return_pooled: bool | str = False,
                           return_dict: bool = False) -> Any:
        """ComfyUI's `CLIP.encode_from_tokens`: the hidden states [1, 77*chunks, width]; with `return_pooled`,
        (hidden states, pooled output); with `return_dict`, {"cond", "pooled_output", ...extra options}."""
        if return_pooled == "unprojected":
            raise RuntimeError("clip.encode_from_tokens: return_pooled='unprojected' is not supported by nodeflow: "
                               "its CLIP values give the projected pooled output only")
        (embeddings, options), = self.encode_tokens(tokens)
        if return_dict:
            return {"cond": embeddings, **options}
        if return_pooled:
            return embeddings, options.get("pooled_output")
        return embeddings

    def encode_from_tokens_scheduled(self, tokens: Tokens, unprojected: bool = False,
                                     add_dict: Mapping[str, Any] | None = None,
                                     show_pbar: bool = True) -> Conditioning:
        """ComfyUI's `CLIP.encode_from_tokens_scheduled`: CONDITIONING [[hidden states, {"pooled_output", ...}]]
        as CLIPTextEncode gives it, with `add_dict`'s entries added to the options (`show_pbar` has no effect:
        encoding reports no progress here)."""
        if unprojected:
            raise RuntimeError("clip.encode_from_tokens_scheduled: unprojected=True is not supported by nodeflow: its "
                               "CLIP values give the projected pooled output only")
        return [[embeddings, {**options, **(add_dict or {})}] for embeddings, options in self.encode_tokens(tokens)]

    def encode(self, text: str) -> torch.Tensor:
        """ComfyUI's `CLIP.encode`: the hidden states of a prompt (no pooled output)."""
        return self.encode_from_tokens(self.tokenize(text))

    def clone(self) -> Any:
        """ComfyUI's `CLIP.clone`: a new CLIP value sharing the loaded modules, which `clip_layer` may change."""
        return dataclasses.replace(self)

    def clip_layer(self, layer_idx: int) -> None:
        """ComfyUI's `CLIP.clip_layer`: read prompts from layer `layer_idx` (-1 the last) from now on. As in ComfyUI
        it changes this value itself, so packs call it on a `clone()` (CLIPSetLastLayer's way); the loaded modules
        are not touched. A layer outside the encoder raises ValueError."""
        changed = self.with_layer(layer_idx)
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, getattr(changed, field.name))

    def get_sd(self) -> dict[str, torch.Tensor]:
        """ComfyUI's `CLIP.get_sd`: the encoders' weights under ComfyUI's keys (`clip_l.transformer.text_model.*`,
        `clip_g.transformer.text_projection.weight`, ...)."""
        state = {}
        for part, module in self.parts().items():
            for key, tensor in resolve(module).state_dict().items():  # a freed T5 is loaded again
                if not key.startswith(("text_model.", "text_projection")):
                    key = "text_model." + key  # transformers 5 leaves the prefix out of CLIPTextModel's keys
                state[f"{part}.transformer.{key}"] = tensor
        return state

    @property
    def cond_stage_model(self) -> ClipModelView:
        return ClipModelView(self)

    def add_patches(self, patches: Mapping[str, Any], strength_patch: float = 1.0,
                    strength_model: float = 1.0) -> list[str]:
        """ComfyUI's CLIP.add_patches (keys as `get_sd` names them; see `diffusion.patcher_api.weight_patch_state`
        for the patch values): applied while encoding, as a LoRA is; changes this value (packs clone first) and
        returns the keys applied. Only the encoders LoRAs reach (the CLIPs, not T5) take patches."""
        from diffusion.patcher_api import weight_patch_state

        weights = self._weights_by_key()
        applied = [key for key in patches if key in weights]
        state = weight_patch_state({key: patches[key] for key in applied}, weights, strength_patch, strength_model)
        if state:
            from diffusion.contracts import LoraPatch

            changed = self.with_lora(LoraPatch(f"add_patches ({len(applied)} keys)", state, None, 1.0))
            for field in dataclasses.fields(self):
                object.__setattr__(self, field.name, getattr(changed, field.name))
        return applied

    def get_key_patches(self) -> dict[str, list[tuple[torch.Tensor]]]:
        """ComfyUI's {key: [(weight,)]} of the encoders' weights (what CLIP merges hand to add_patches)."""
        return {key: [(tensor,)] for key, tensor in self.get_sd().items()}

    def _weights_by_key(self) -> dict[str, tuple[torch.Tensor, str, str]]:
        """ComfyUI key -> (weight, our LoRA component, the layer's name) of the encoders that take LoRAs."""
        components = {id(module): component for component, module in self.lora_modules()}
        found = {}
        for part, module in self.parts().items():
            component = components.get(id(module))
            if component is None:  # an encoder LoRAs do not reach (T5)
                continue
            for key, tensor in resolve(module).state_dict().items():
                if not key.startswith(("text_model.", "text_projection")):
                    key = "text_model." + key
                found[f"{part}.transformer.{key}"] = (tensor, component, key.rpartition(".")[0])
        return found

    def __getattr__(self, name: str) -> Any:
        """ComfyUI names nodeflow's CLIP cannot answer fail with the reason (only reached for missing names)."""
        if name in UNSUPPORTED:
            raise AttributeError(f"clip.{name}: not supported by nodeflow: {UNSUPPORTED[name]}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
