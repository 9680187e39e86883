"""ComfyUI's ModelPatcher API on our MODEL (`DiffusionModel`), for node packs: `clone()`, the model facts packs
read (`model.model.model_sampling`, `get_model_object`, devices, dtype, size) and the sampler function setters
(`set_model_sampler_cfg_function`, `..._post_cfg_function`, `..._pre_cfg_function`), each mapped onto our own
patch mechanism (`DiffusionModel.post_cfg` / `pre_cfg`, run by `diffusion.sampling.guiders`).

ComfyUI's setters change the patcher they are called on, so packs clone first: here too `clone()` gives a new MODEL
value and the setters change only that value (the loaded network is shared and never changed). A pack that calls a
setter on a MODEL it did not clone changes that value for everyone holding it, as it would in ComfyUI.
Other ModelPatcher names (weight patches, attention and block patches, UNet wrappers, `model_options`) are not
provided: asking for one raises an AttributeError that names it. Knows nothing of nodes or compat.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable

import torch

from diffusion import memory

# ModelPatcher names packs use that this MODEL does not answer, and why (asked for, they raise with the reason)
UNSUPPORTED = {
    name: "ComfyUI's weight patches are not applied to nodeflow's models; use LoraLoader or the merge nodes"
    for name in ("add_patches", "get_key_patches", "patch_model", "unpatch_model", "model_state_dict")
} | {
    name: "attention, block and UNet-function patches of ComfyUI's UNet do not exist in nodeflow's models"
    for name in ("set_model_attn1_patch", "set_model_attn2_patch", "set_model_attn1_replace",
                 "set_model_attn2_replace", "set_model_attn1_output_patch", "set_model_attn2_output_patch",
                 "set_model_input_block_patch", "set_model_output_block_patch", "set_model_patch",
                 "set_model_patch_replace", "set_model_unet_function_wrapper", "set_model_double_block_patch",
                 "add_wrapper", "add_wrapper_with_key", "add_callback", "add_object_patch", "model_options")
}


class ModelView:
    """`MODEL.model` as packs read it (ComfyUI's BaseModel): the noise schedule, the latent format, the network."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    @property
    def model_sampling(self) -> Any:
        return self._owner.model_sampling

    @property
    def latent_format(self) -> Any:
        return self._owner.latent_format

    @property
    def diffusion_model(self) -> Any:
        return self._owner.network

    @property
    def device(self) -> torch.device:
        return self._owner.device

    def get_dtype(self) -> torch.dtype:
        return self._owner.dtype

    def process_latent_in(self, latent: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents into the model's sampling space."""
        return self._owner.latent_format.process_in(latent)

    def process_latent_out(self, latent: torch.Tensor) -> torch.Tensor:
        """Sampling-space latents back to raw VAE latents."""
        return self._owner.latent_format.process_out(latent)

    def scale_latent_inpaint(self, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                             latent_image: torch.Tensor) -> torch.Tensor:
        """`latent_image` noised with `noise` to `sigma` as the model noises (what inpainting keeps outside the
        mask); `x` is not used, as in ComfyUI's models."""
        return self._owner.model_sampling.noise_scaling(sigma, noise, latent_image)


class ComfyModelPatcherApi:
    """Mixed into `DiffusionModel` (a frozen dataclass with `network`, `post_cfg`, `pre_cfg`, `model_sampling`,
    `latent_format`, `device`, `dtype`)."""

    def clone(self) -> Any:
        return dataclasses.replace(self)

    def is_clone(self, other: Any) -> bool:
        return getattr(other, "network", None) is self.network

    @property
    def model(self) -> ModelView:
        return ModelView(self)

    def get_model_object(self, name: str) -> Any:
        """ComfyUI's names for the model's parts: "model_sampling", "latent_format", "diffusion_model"."""
        view = ModelView(self)
        if name in ("model_sampling", "latent_format", "diffusion_model"):
            return getattr(view, name)
        if name.startswith("diffusion_model."):
            return self.network.get_submodule(name.removeprefix("diffusion_model."))
        raise AttributeError(f"MODEL.get_model_object({name!r}): nodeflow's MODEL has model_sampling, "
                             "latent_format and diffusion_model (and its submodules)")

    @property
    def load_device(self) -> torch.device:
        return self.device

    @property
    def offload_device(self) -> torch.device:
        return torch.device("cpu")

    def model_dtype(self) -> torch.dtype:
        return self.dtype

    def model_size(self) -> int:
        return memory.size_in_bytes(self.network)

    @property
    def size(self) -> int:
        return self.model_size()

    def set_model_sampler_cfg_function(self, function: Callable[[dict[str, Any]], torch.Tensor],
                                       disable_cfg1_optimization: bool = False) -> None:
        """Guidance computed by `function` instead of CFG. It gets ComfyUI's args ("cond" and "uncond" as noise
        predictions x - denoised, "cond_denoised", "uncond_denoised", "cond_scale", "input", "sigma", "timestep",
        "model") and returns the guided noise prediction."""
        others = tuple(patch for patch in self.post_cfg if not getattr(patch, "replaces_cfg", False))
        self._set("post_cfg", (CfgFunction(function, self.model, disable_cfg1_optimization),) + others)

    def set_model_sampler_post_cfg_function(self, function: Callable[[dict[str, Any]], torch.Tensor],
                                            disable_cfg1_optimization: bool = False) -> None:
        """`function(args)` turns the guided denoised estimate ("denoised") into a new one after guidance."""
        self._set("post_cfg", self.post_cfg + (PostCfgFunction(function, self.model, disable_cfg1_optimization),))

    def set_model_sampler_pre_cfg_function(self, function: Callable[[dict[str, Any]], list[torch.Tensor]],
                                           disable_cfg1_optimization: bool = False) -> None:
        """`function(args)` gets "conds_out" [cond, uncond] denoised estimates before guidance, returns new ones."""
        self._set("pre_cfg", self.pre_cfg + (PreCfgFunction(function, self.model, disable_cfg1_optimization),))

    def set_model_denoise_mask_function(self, function: Callable[..., torch.Tensor]) -> None:
        """`function(sigma, denoise_mask, extra_options)` turns a LATENT noise mask into each step's (ComfyUI's
        Differential Diffusion hook); `extra_options` has "model" (its `inner_model` is `MODEL.model`) and
        "sigmas"."""
        self._set("denoise_mask_function", PackDenoiseMask(function, self.model))

    def _set(self, field: str, value: Any) -> None:
        object.__setattr__(self, field, value)  # ComfyUI's setters change the (cloned) patcher itself

    def __getattr__(self, name: str) -> Any:
        if name in UNSUPPORTED:
            raise AttributeError(f"MODEL.{name} is not supported by nodeflow: {UNSUPPORTED[name]}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class _PackFunction:
    function: Callable[[dict[str, Any]], Any]
    model: ModelView
    needs_uncond: bool = False


class CfgFunction(_PackFunction):
    """A pack's `sampler_cfg_function` as a post-CFG patch that recomputes guidance from the two estimates."""

    replaces_cfg = True

    def __call__(self, args: dict[str, Any]) -> torch.Tensor:
        x, cond, uncond = args["input"], args["cond_denoised"], args["uncond_denoised"]
        prediction = self.function({"cond": x - cond, "uncond": x - uncond, "cond_scale": args["cond_scale"],
                                    "timestep": args["sigma"], "input": x, "sigma": args["sigma"],
                                    "cond_denoised": cond, "uncond_denoised": uncond, "model": self.model,
                                    "model_options": {"transformer_options": {}}})
        return x - prediction


class PostCfgFunction(_PackFunction):
    """A pack's `sampler_post_cfg_function` as a post-CFG patch."""

    def __call__(self, args: dict[str, Any]) -> torch.Tensor:
        return self.function({**args, "model": self.model, "model_options": {"transformer_options": {}}})


class PreCfgFunction(_PackFunction):
    """A pack's `sampler_pre_cfg_function` as a pre-CFG patch."""

    def __call__(self, args: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        cond, uncond = self.function({"conds_out": [args["cond_denoised"], args["uncond_denoised"]],
                                      "cond_scale": args["cond_scale"], "timestep": args["sigma"],
                                      "input": args["input"], "sigma": args["sigma"], "model": self.model,
                                      "model_options": {"transformer_options": {}}})
        return cond, uncond


@dataclasses.dataclass(frozen=True)
class PackDenoiseMask:
    """A pack's denoise mask function under our `denoise_mask_function` contract (sigma, mask, sigmas, schedule)."""

    function: Callable[..., torch.Tensor]
    model: ModelView

    def __call__(self, sigma: torch.Tensor, mask: torch.Tensor, sigmas: torch.Tensor,
                 model_sampling: Any) -> torch.Tensor:
        sampler_model = types.SimpleNamespace(inner_model=self.model, model_sampling=model_sampling)
        return self.function(sigma, mask, extra_options={"model": sampler_model, "sigmas": sigmas})
