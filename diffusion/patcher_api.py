"""ComfyUI's ModelPatcher API on our MODEL (`DiffusionModel`), for node packs: `clone()`, the model facts packs
read (`model.model.model_sampling`, `get_model_object`, devices, dtype, size), the sampler function setters
(`set_model_sampler_cfg_function`, `..._post_cfg_function`, `..._pre_cfg_function`), each mapped onto our own
patch mechanism (`DiffusionModel.post_cfg` / `pre_cfg`, run by `diffusion.sampling.guiders`), and the UNet's
attention and block patches (`set_model_attn1_patch`, `set_model_attn2_replace`, `set_model_input_block_patch`,
...), kept in `DiffusionModel.unet_patches` and run by `diffusion.sampling.unet_patches` with ComfyUI's
extra_options (its block numbering, `cond_or_uncond`, `sigmas`, shapes).

ComfyUI's setters change the patcher they are called on, so packs clone first: here too `clone()` gives a new MODEL
value and the setters change only that value (the loaded network is shared and never changed). A pack that calls a
setter on a MODEL it did not clone changes that value for everyone holding it, as it would in ComfyUI.
Patcher callbacks (ON_CLONE, ON_PRE_RUN, ON_CLEANUP) run in clone() and around each sampling run. Other
ModelPatcher names (DiT block patches, object patches) are not provided: asking for one raises an AttributeError
that names it. Knows nothing of nodes or compat.
"""
from __future__ import annotations

import contextlib
import dataclasses
import types
from typing import Any, Callable, Iterator, Mapping

import torch

from diffusion import memory, quantized

# ModelPatcher names packs use that this MODEL does not answer, and why (asked for, they raise with the reason)
UNSUPPORTED = {
    name: "nodeflow never patches a loaded network in place: weight patches (add_patches) apply while sampling"
    for name in ("patch_model", "unpatch_model")
} | {
    name: "DiT block patches and object patches of ComfyUI's models do not exist in nodeflow's models"
    for name in ("set_model_double_block_patch", "add_object_patch")
}
# The callback kinds (ComfyUI's CallbacksMP) a MODEL runs: ON_CLONE in clone(), ON_PRE_RUN / ON_CLEANUP around
# each sampling run (`run_callbacks`); ComfyUI's load/detach/hook kinds have no moment in nodeflow
SUPPORTED_CALLBACKS = ("on_clone", "on_pre_run", "on_cleanup")
# The wrapper kinds (ComfyUI's WrappersMP) a MODEL takes: each runs in our sampling core where ComfyUI runs it
SUPPORTED_WRAPPERS = ("apply_model", "outer_sample")
# transformer_options["patches"] kinds and ["patches_replace"] kinds that run in our UNet
PATCH_KINDS = ("attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch", "input_block_patch",
               "input_block_patch_after_skip", "output_block_patch")
REPLACE_KINDS = ("attn1", "attn2")


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
        """A new MODEL value over the same network, its model_options copied (nested dicts and lists copied, the
        functions in them shared), as ComfyUI clones a patcher."""
        clone = dataclasses.replace(self, model_options=copied_options(self.model_options),
                                    callbacks=copied_options(self.callbacks))
        for callback in self.get_all_callbacks("on_clone"):
            callback(self, clone)  # ComfyUI's ON_CLONE: (the original patcher, its clone)
        return clone

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

    # -- model_options: the UNet's attention and block patches (transformer_options "patches" / "patches_replace"),
    # run by `diffusion.sampling.unet_patches` on UNet models (SD1.x, SD2.x, SDXL; another network refuses them
    # when sampling starts), the UNet function wrapper and wrappers, run by `diffusion.sampling.guiders`

    def set_model_attn1_patch(self, patch: Callable[..., Any]) -> None:
        """`patch(n, context, value, extra_options)` -> (n, context, value): the self-attention's inputs before
        their projections."""
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn2_patch(self, patch: Callable[..., Any]) -> None:
        """As `set_model_attn1_patch`, for the cross-attention (context: the text embedding)."""
        self.set_model_patch(patch, "attn2_patch")

    def set_model_attn1_output_patch(self, patch: Callable[..., Any]) -> None:
        """`patch(out, extra_options)` -> out: the self-attention's result after its output projection."""
        self.set_model_patch(patch, "attn1_output_patch")

    def set_model_attn2_output_patch(self, patch: Callable[..., Any]) -> None:
        """As `set_model_attn1_output_patch`, for the cross-attention."""
        self.set_model_patch(patch, "attn2_output_patch")

    def set_model_attn1_replace(self, patch: Callable[..., Any], block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        """`patch(q, k, v, extra_options)` -> out computes the self-attention of block (`block_name`, `number`)
        (at transformer block `transformer_index` of it, or all of them) from the projected query, key and value,
        before the output projection."""
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn2_replace(self, patch: Callable[..., Any], block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        """As `set_model_attn1_replace`, for the cross-attention."""
        self.set_model_patch_replace(patch, "attn2", block_name, number, transformer_index)

    def set_model_input_block_patch(self, patch: Callable[..., Any]) -> None:
        """`patch(h, transformer_options)` -> h after each input block, before its output is kept as a skip."""
        self.set_model_patch(patch, "input_block_patch")

    def set_model_input_block_patch_after_skip(self, patch: Callable[..., Any]) -> None:
        """`patch(h, transformer_options)` -> h after each input block, after its output was kept as a skip."""
        self.set_model_patch(patch, "input_block_patch_after_skip")

    def set_model_output_block_patch(self, patch: Callable[..., Any]) -> None:
        """`patch(h, hsp, transformer_options)` -> (h, hsp) before each output block joins h and its skip hsp."""
        self.set_model_patch(patch, "output_block_patch")

    def set_model_patch(self, patch: Callable[..., Any], name: str) -> None:
        """ComfyUI's generic setter, into model_options["transformer_options"]["patches"][name]: one of
        `PATCH_KINDS`."""
        if name not in PATCH_KINDS:
            raise AttributeError(f"MODEL.set_model_patch: patch kind {name!r} is not supported by nodeflow "
                                 f"(supported: {', '.join(PATCH_KINDS)})")
        patches = self.model_options.setdefault("transformer_options", {}).setdefault("patches", {})
        patches[name] = patches.get(name, []) + [patch]

    def set_model_patch_replace(self, patch: Callable[..., Any], name: str, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        """ComfyUI's generic replace setter, into model_options["transformer_options"]["patches_replace"][name]:
        "attn1" or "attn2"."""
        if name not in REPLACE_KINDS:
            raise AttributeError(f"MODEL.set_model_patch_replace: {name!r} replacements are not supported by "
                                 "nodeflow (supported: attn1, attn2)")
        key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
        replaces = self.model_options.setdefault("transformer_options", {}).setdefault("patches_replace", {})
        replaces.setdefault(name, {})[key] = patch

    def set_model_unet_function_wrapper(self, function: Callable[..., torch.Tensor]) -> None:
        """`function(apply_model, {"input", "timestep", "c", "cond_or_uncond"})` -> the denoised estimate, around
        every network call of sampling: `apply_model(input, timestep, **c)` gives it for noisy latents `input` at
        sigma `timestep`."""
        self.model_options["model_function_wrapper"] = function

    def add_wrapper_with_key(self, wrapper_type: str, key: str | None, wrapper: Callable[..., Any]) -> None:
        """A ComfyUI wrapper of kind `wrapper_type` (`SUPPORTED_WRAPPERS`: "apply_model" wraps each network call
        as `wrapper(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)` -> the
        denoised estimate; "outer_sample" each sampling run as `wrapper(executor, noise, latent_image, sampler,
        sigmas, denoise_mask, callback, disable_pbar, seed)`, `executor.class_obj` the guider, whose
        `model_options` is the run's own copy), kept under `key`."""
        if wrapper_type not in SUPPORTED_WRAPPERS:
            raise AttributeError(f"MODEL.add_wrapper_with_key: {wrapper_type!r} wrappers are not supported by "
                                 f"nodeflow (supported: {', '.join(SUPPORTED_WRAPPERS)})")
        wrappers = self.model_options.setdefault("transformer_options", {}).setdefault("wrappers", {})
        wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)

    def add_wrapper(self, wrapper_type: str, wrapper: Callable[..., Any]) -> None:
        self.add_wrapper_with_key(wrapper_type, None, wrapper)

    def get_wrappers(self, wrapper_type: str, key: str | None) -> list[Callable[..., Any]]:
        wrappers = self.model_options.get("transformer_options", {}).get("wrappers", {})
        return list(wrappers.get(wrapper_type, {}).get(key, []))

    def remove_wrappers_with_key(self, wrapper_type: str, key: str | None) -> None:
        self.model_options.get("transformer_options", {}).get("wrappers", {}).get(wrapper_type, {}).pop(key, None)

    # -- patcher callbacks (ComfyUI's CallbacksMP), kept in `DiffusionModel.callbacks`

    def add_callback_with_key(self, call_type: str, key: str | None, callback: Callable[..., Any]) -> None:
        """A ComfyUI patcher callback of kind `call_type` under `key`: "on_clone" gets (original, clone) in
        clone(), "on_pre_run" and "on_cleanup" get the MODEL before and after each sampling run; other kinds
        have no moment in nodeflow and are refused by name."""
        if call_type not in SUPPORTED_CALLBACKS:
            raise AttributeError(f"MODEL.add_callback_with_key: {call_type!r} callbacks are not supported by "
                                 f"nodeflow (supported: {', '.join(SUPPORTED_CALLBACKS)})")
        self.callbacks.setdefault(call_type, {}).setdefault(key, []).append(callback)

    def add_callback(self, call_type: str, callback: Callable[..., Any]) -> None:
        self.add_callback_with_key(call_type, None, callback)

    def get_all_callbacks(self, call_type: str) -> list[Callable[..., Any]]:
        """Every callback of kind `call_type`, key by key in the order they were added."""
        return [c for group in self.callbacks.get(call_type, {}).values() for c in group]

    def remove_callbacks_with_key(self, call_type: str, key: str | None) -> None:
        self.callbacks.get(call_type, {}).pop(key, None)

    @contextlib.contextmanager
    def run_callbacks(self) -> Iterator[None]:
        """Around a sampling run: the ON_PRE_RUN callbacks with this MODEL before it, the ON_CLEANUP ones after it
        (also when it fails), as ComfyUI's pre_run and cleanup run them."""
        for callback in self.get_all_callbacks("on_pre_run"):
            callback(self)
        try:
            yield
        finally:
            for callback in self.get_all_callbacks("on_cleanup"):
                callback(self)

    # -- weight patches: ComfyUI's model keys and patch values (`comfy.lora`), applied as LoRAs are while sampling

    def model_state_dict(self, filter_prefix: str | None = None) -> dict[str, torch.Tensor]:
        """The network's weights under ComfyUI's model keys ("diffusion_model.<LDM name>.weight" for a UNet;
        layers without an LDM name are left out), those starting with `filter_prefix` when given."""
        return {key: tensor for key, (tensor, _, _) in self._weights_by_model_key().items()
                if filter_prefix is None or key.startswith(filter_prefix)}

    def get_key_patches(self, filter_prefix: str | None = None) -> dict[str, list[tuple[torch.Tensor]]]:
        """ComfyUI's {model key: [(weight,)]} (what its model merges hand to another MODEL's add_patches); the
        patches added to this value apply while sampling and are not listed."""
        return {key: [(tensor,)] for key, tensor in self.model_state_dict(filter_prefix).items()}

    def add_patches(self, patches: Mapping[str, Any], strength_patch: float = 1.0,
                    strength_model: float = 1.0) -> list[str]:
        """ComfyUI's add_patches: for each model key of `patches` this network has, its weight becomes
        `strength_model * W + strength_patch * change` while sampling (a LoRA adapter's up @ down * alpha / rank,
        a ("diff", (difference,)) tuple, or another model's [(weight,)] as merges give); changes this value (packs
        clone first) and returns the keys it applied."""
        weights = self._weights_by_model_key()
        applied = [key for key in patches if key in weights]
        state = weight_patch_state({key: patches[key] for key in applied}, weights, strength_patch, strength_model)
        if state:
            from diffusion.contracts import LoraPatch

            patch = LoraPatch(f"add_patches ({len(applied)} keys)", state, None, 1.0)
            self._set("loras", self.loras + (patch,))
        return applied

    def _weights_by_model_key(self) -> dict[str, tuple[torch.Tensor, str, str]]:
        """ComfyUI model key -> (weight, our LoRA component, the layer's name as LoRA keys may write it)."""
        from diffusion.lora import ldm_layer_names

        names = {name: ldm for ldm, name in ldm_layer_names(self.network).items()}
        if not names:
            raise AttributeError(f"MODEL weight patches: ComfyUI's model keys of a {type(self.network).__name__} "
                                 "(SD3, FLUX) are not supported by nodeflow; use LoraLoader or the merge nodes")
        found = {}
        for key, tensor in quantized.network_values(self.network.state_dict()).items():
            layer, _, parameter = key.rpartition(".")
            if layer in names:
                found[f"diffusion_model.{names[layer]}.{parameter}"] = (tensor, self.lora_component, names[layer])
        return found

    def sampling_unet_patches(self) -> tuple[Any, ...]:
        """The UNet patches a sampling run applies: the model's own (FreeU, HyperTile, ...) and those in its
        model_options, in ComfyUI's order of kinds; a kind nodeflow cannot run is refused by name."""
        transformer_options = self.model_options.get("transformer_options", {})
        patches = transformer_options.get("patches", {})
        replaces = transformer_options.get("patches_replace", {})
        unknown = sorted(set(patches) - set(PATCH_KINDS)) + sorted(set(replaces) - set(REPLACE_KINDS))
        if unknown:
            raise ValueError(f"model_options transformer_options patches {unknown} are not supported by nodeflow "
                             f"(supported: {', '.join(PATCH_KINDS + REPLACE_KINDS)})")
        found: list[Any] = []
        for kind in ("attn1", "attn2"):
            found += [PackAttentionInputs(kind, f) for f in patches.get(f"{kind}_patch", [])]
            found += [PackAttentionOutput(kind, f) for f in patches.get(f"{kind}_output_patch", [])]
            # block-wide keys first, so that a key naming the transformer block too wins, as in ComfyUI
            for key, function in sorted(replaces.get(kind, {}).items(), key=lambda item: len(item[0])):
                found.append(PackAttentionReplace(kind, function, tuple(key)))
        found += [PackInputBlockPatch(f) for f in patches.get("input_block_patch", [])]
        found += [PackAfterSkipPatch(f) for f in patches.get("input_block_patch_after_skip", [])]
        found += [PackOutputBlockPatch(f) for f in patches.get("output_block_patch", [])]
        return self.unet_patches + tuple(found)

    def outer_sample_wrappers(self) -> list[Callable[..., Any]]:
        """The OUTER_SAMPLE wrappers around each sampling run, in order."""
        wrappers = self.model_options.get("transformer_options", {}).get("wrappers", {}).get("outer_sample", {})
        return [wrapper for group in wrappers.values() for wrapper in group]

    def apply_model_wrappers(self) -> tuple[Callable[..., Any] | None, list[Callable[..., Any]]]:
        """(the UNet function wrapper or None, the APPLY_MODEL wrappers in order) that wrap each network call."""
        kinds = self.model_options.get("transformer_options", {}).get("wrappers", {})
        unknown = sorted(kind for kind, wrappers in kinds.items() if wrappers and kind not in SUPPORTED_WRAPPERS)
        if unknown:
            raise ValueError(f"model_options wrappers {unknown} are not supported by nodeflow (supported: "
                             f"{', '.join(SUPPORTED_WRAPPERS)})")
        wrappers = kinds.get("apply_model", {})
        return self.model_options.get("model_function_wrapper"), [w for group in wrappers.values() for w in group]

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


# -- pack patches of the UNet, as `diffusion.sampling.unet_patches` runs them


class GuiderFace:
    """One of our GUIDER values as ComfyUI's CFGGuider to a pack's code (a wrapper's `executor.class_obj`, a
    sampler function's `model.inner_model`): `model_patcher`, `inner_model` (the MODEL's facts), `model_options`,
    `cfg`, `conds`."""

    def __init__(self, guider: Any) -> None:
        self.model_patcher = guider.model
        self.inner_model = ModelView(guider.model)
        self.model_options = guider.model.model_options
        self.cfg = getattr(guider, "cfg", 1.0)
        self.conds = {name: getattr(guider, name) for name in ("positive", "negative") if hasattr(guider, name)}


def comfy_guider(guider: Any) -> Any:
    """The guider as packs see ComfyUI's: itself when it already is one (comfy.samplers.CFGGuider), else a face."""
    return guider if hasattr(guider, "model_patcher") else GuiderFace(guider)


class WrapperExecutor:
    """ComfyUI's WrapperExecutor: called, it runs the next wrapper, which gets the executor of the rest first (and
    may call it any number of times), or after the last wrapper the original function. `class_obj` is the object
    the wrapped method belongs to, for wrappers that read it."""

    def __init__(self, original: Callable[..., Any], wrappers: list[Callable[..., Any]], class_obj: Any = None,
                 index: int = 0) -> None:
        self.original, self.wrappers, self.class_obj, self.index = original, list(wrappers), class_obj, index

    @classmethod
    def new_executor(cls, original: Callable[..., Any], wrappers: list[Callable[..., Any]],
                     idx: int = 0) -> "WrapperExecutor":
        return cls(original, wrappers, None, idx)

    @classmethod
    def new_class_executor(cls, original: Callable[..., Any], class_obj: Any, wrappers: list[Callable[..., Any]],
                           idx: int = 0) -> "WrapperExecutor":
        return cls(original, wrappers, class_obj, idx)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.index < len(self.wrappers):
            rest = WrapperExecutor(self.original, self.wrappers, self.class_obj, self.index + 1)
            return self.wrappers[self.index](rest, *args, **kwargs)
        return self.original(*args, **kwargs)

    execute = __call__


def weight_patch_state(patches: Mapping[str, Any], weights: Mapping[str, tuple[torch.Tensor, str, str]],
                       strength_patch: float, strength_model: float) -> dict[str, torch.Tensor]:
    """ComfyUI's weight patches as the deferred keys of a LoRA state dict (`diffusion.lora_formats`): a LoRA
    adapter's pair with its alpha / rank and `strength_patch` folded into the up factor, every other change as a
    whole difference, and `strength_model` != 1 as the difference (strength_model - 1) * W. `weights`: model key ->
    (weight, component, layer name)."""
    state: dict[str, torch.Tensor] = {}

    def add_difference(key: str, difference: torch.Tensor) -> None:
        weight, component, layer = weights[key]
        kind = "diff_b" if key.endswith(".bias") else "diff"
        name = f"{component}.{layer}.{kind}"
        difference = difference.detach().float().cpu().reshape(weight.shape)
        state[name] = state[name] + difference if name in state else difference

    for key, value in patches.items():
        weight, component, layer = weights[key]
        if strength_model != 1.0:
            add_difference(key, (strength_model - 1.0) * weight.float())
        weights_of = getattr(value, "weights", None)
        if weights_of is not None:  # a LoRA adapter
            up, down, alpha, mid, dora_scale = (tuple(weights_of) + (None,) * 5)[:5]
            if mid is not None or dora_scale is not None:
                raise ValueError(f"add_patches: {key}: LoCon mid weights and DoRA are not supported by nodeflow")
            if key.endswith(".bias"):
                raise ValueError(f"add_patches: {key}: a low-rank pair for a bias")
            scale = strength_patch * (float(alpha) / down.shape[0] if alpha is not None else 1.0)
            state[f"{component}.{layer}.lora_up"] = up.detach().float().cpu() * scale
            state[f"{component}.{layer}.lora_down"] = down.detach().float().cpu()
        elif isinstance(value, tuple) and len(value) == 2 and value[0] == "diff":
            add_difference(key, strength_patch * value[1][0].float())
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], tuple) and len(value[0]) == 1:
            add_difference(key, strength_patch * value[0][0].float())  # another model's weight (a merge)
        else:
            raise ValueError(f"add_patches: {key}: a {type(value).__name__} patch is not supported by nodeflow "
                             "(LoRA adapters, ('diff', (tensor,)) and [(weight,)] are)")
    return state


def copied_options(options: Any) -> Any:
    """ComfyUI's copy of model_options: dicts and lists copied at every depth, everything else shared."""
    if isinstance(options, dict):
        return {key: copied_options(value) for key, value in options.items()}
    if isinstance(options, list):
        return [copied_options(value) for value in options]
    return options


def comfy_transformer_options(run: Any, rows: int, device: torch.device, block: tuple[str, int] | None = None,
                              place: Any = None) -> dict[str, Any]:
    """ComfyUI's `transformer_options` / attention `extra_options` at a point of the UNet's forward: the call's
    rows (`cond_or_uncond`, `sigmas`), the input's and the current transformer's shapes, and the block (with
    the attention's heads when at an attention)."""
    options: dict[str, Any] = {
        "cond_or_uncond": list(run.cond_or_uncond),
        "sigmas": torch.full((rows,), float(run.sigma if run.sigma is not None else 0.0), device=device),
        "original_shape": list(run.input_shape or ()),
    }
    if place is not None:
        options.update(block=place.block, block_index=place.block_index, transformer_index=place.transformer_index,
                       n_heads=place.heads, dim_head=place.head_width, attn_precision=None,
                       activations_shape=list(run.activations_shape or ()))
    elif block is not None:
        options["block"] = block
    return options


@dataclasses.dataclass(frozen=True)
class PackAttentionInputs:
    """A pack's attn1_patch / attn2_patch."""

    kind: str
    function: Callable[..., Any]

    def attention_inputs(self, place: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         run: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if place.kind != self.kind:
            return q, k, v
        q, k, v = self.function(q, k, v, comfy_transformer_options(run, q.shape[0], q.device, place=place))
        return q, k, v


@dataclasses.dataclass(frozen=True)
class PackAttentionOutput:
    """A pack's attn1_output_patch / attn2_output_patch."""

    kind: str
    function: Callable[..., Any]

    def attention_output(self, place: Any, out: torch.Tensor, run: Any) -> torch.Tensor:
        if place.kind != self.kind:
            return out
        return self.function(out, comfy_transformer_options(run, out.shape[0], out.device, place=place))


@dataclasses.dataclass(frozen=True)
class PackAttentionReplace:
    """A pack's attn1_replace / attn2_replace at one block (all its transformer blocks, or one of them)."""

    kind: str
    function: Callable[..., Any]
    key: tuple

    def replaced_attention(self, place: Any) -> Callable[..., torch.Tensor] | None:
        if place.kind != self.kind or self.key not in (place.block, (*place.block, place.block_index)):
            return None

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, run: Any) -> torch.Tensor:
            return self.function(q, k, v, comfy_transformer_options(run, q.shape[0], q.device, place=place))

        return attend


@dataclasses.dataclass(frozen=True)
class PackInputBlockPatch:
    """A pack's input_block_patch: after each input block, before its output is kept as a skip."""

    function: Callable[..., Any]

    def input_block(self, h: torch.Tensor, index: int, run: Any) -> torch.Tensor:
        return self.function(h, comfy_transformer_options(run, h.shape[0], h.device, block=("input", index)))


@dataclasses.dataclass(frozen=True)
class PackAfterSkipPatch:
    """A pack's input_block_patch_after_skip: after each input block's output was kept as a skip."""

    function: Callable[..., Any]

    def after_skip(self, h: torch.Tensor, index: int, run: Any) -> torch.Tensor:
        return self.function(h, comfy_transformer_options(run, h.shape[0], h.device, block=("input", index)))


@dataclasses.dataclass(frozen=True)
class PackOutputBlockPatch:
    """A pack's output_block_patch: before each output block joins the hidden state and its skip."""

    function: Callable[..., Any]

    def output_block(self, h: torch.Tensor, hsp: torch.Tensor, index: int,
                     run: Any) -> tuple[torch.Tensor, torch.Tensor]:
        h, hsp = self.function(h, hsp, comfy_transformer_options(run, h.shape[0], h.device, block=("output", index)))
        return h, hsp
