"""LoRA training from latents and text embeddings already encoded (what ComfyUI's TrainLoraNode takes), on the
pieces of `training.trainer`, and the adapters in ComfyUI's LORA_MODEL layout.

The same adapters as `LoraTrainer` (rank-`rank` LoRA on the UNet attention projections, trained on a copy of the
module tree that shares the frozen base weights), the same noising and target (epsilon or v, as the model's
scheduler config says), gradient clipping and per-step seeding; what differs is the data: raw VAE latents
[N, C, h, w] (the model's latent format scales them in) with one text embedding [T, D] per latent, a loss and an
optimizer picked from ComfyUI's lists, and the result kept in memory instead of written to a file. The adapters
come back keyed as ComfyUI's trainer keys them (`diffusion_model.<LDM layer>.lora_up.weight`, `.lora_down.weight`,
`.alpha`), which our LoRA readers (`diffusion.lora_formats`) and ComfyUI both apply. Knows nothing of nodes.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from diffusion.components import DiffusionModel
from diffusion.families.ldm_export import UNET_PREFIX, unet_to_ldm
from training.lora_file import lora_layers
from training.trainer import (
    MAX_GRAD_NORM,
    UNET_TARGETS,
    WEIGHT_DECAY,
    TrainingSettings,
    adapter_copy,
    adapter_parameters,
    flags_restored,
)

COMFY_LORA_PREFIX = "diffusion_model."  # ComfyUI's LORA_MODEL keys: the layer's name inside its BaseModel
OPTIMIZERS = ("AdamW", "Adam", "SGD", "RMSprop")
LOSS_FUNCTIONS = ("MSE", "L1", "Huber", "SmoothL1")
_LOSSES = {"MSE": torch.nn.functional.mse_loss, "L1": torch.nn.functional.l1_loss,
           "Huber": torch.nn.functional.huber_loss, "SmoothL1": torch.nn.functional.smooth_l1_loss}

StepCallback = Callable[[int, int, list[float]], None]


@dataclass(frozen=True)
class LatentTrainingResult:
    """The trained adapters in ComfyUI's LORA_MODEL layout, and the loss of every micro-batch (ComfyUI's LOSS_MAP)."""

    lora: dict[str, torch.Tensor]
    losses: list[float]


def _optimizer(name: str, parameters: list[torch.nn.Parameter], learning_rate: float) -> torch.optim.Optimizer:
    if name == "AdamW":
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=WEIGHT_DECAY)
    if name == "Adam":
        return torch.optim.Adam(parameters, lr=learning_rate)
    if name == "SGD":
        return torch.optim.SGD(parameters, lr=learning_rate)
    return torch.optim.RMSprop(parameters, lr=learning_rate)


def adapted_layers(network: Any) -> list[str]:
    """The layers LoRA training adapts: the attention projections `UNET_TARGETS` names (peft's matching rule)."""
    return [name for name, _ in network.named_modules()
            if any(name == target or name.endswith("." + target) for target in UNET_TARGETS)]


def ldm_layer_names(network: Any) -> dict[str, str]:
    """diffusers layer name -> LDM layer name (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q` ->
    `input_blocks.1.1.transformer_blocks.0.attn1.to_q`) of every layer training adapts in a diffusers UNet."""
    names = {}
    for name in adapted_layers(network):
        (ldm_key,) = unet_to_ldm({f"{name}.weight": torch.empty(0)}, network.config)
        names[name] = ldm_key.removeprefix(UNET_PREFIX).removesuffix(".weight")
    return names


def comfy_lora_state(unet: Any, names: Mapping[str, str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The "default" peft adapter of `unet` in ComfyUI's LORA_MODEL keys, as `dtype` CPU tensors."""
    state: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(unet):
        key = COMFY_LORA_PREFIX + names[name]
        state[f"{key}.lora_up.weight"] = layer.lora_B["default"].weight.detach().to("cpu", dtype).contiguous()
        state[f"{key}.lora_down.weight"] = layer.lora_A["default"].weight.detach().to("cpu", dtype).contiguous()
        state[f"{key}.alpha"] = torch.tensor(float(layer.lora_alpha["default"]), dtype=dtype)
    return state


def _load_existing(unet: Any, names: Mapping[str, str], existing: Mapping[str, torch.Tensor], alpha: float,
                   input_name: str) -> None:
    """Start from a LoRA in ComfyUI's layout: each pair copied in, its `alpha / rank` scale made ours."""
    loaded = 0
    with torch.no_grad():
        for name, layer in lora_layers(unet):
            key = COMFY_LORA_PREFIX + names[name]
            up, down = existing.get(f"{key}.lora_up.weight"), existing.get(f"{key}.lora_down.weight")
            if up is None or down is None:
                continue
            target_up, target_down = layer.lora_B["default"].weight, layer.lora_A["default"].weight
            if tuple(down.shape) != tuple(target_down.shape) or tuple(up.shape) != tuple(target_up.shape):
                raise ValueError(f"{input_name}: {key} has rank {down.shape[0]} (or another layer shape); train "
                                 f"with rank {down.shape[0]} to continue it")
            file_alpha = float(existing.get(f"{key}.alpha", torch.tensor(float(down.shape[0]))))
            target_down.copy_(down.float())
            target_up.copy_(up.float() * (file_alpha / alpha))
            loaded += 1
    if not loaded:
        raise ValueError(f"{input_name}: has no LoRA pairs ({COMFY_LORA_PREFIX}...lora_up/lora_down) for the "
                         "attention layers trained here")


def _check_data(model: DiffusionModel, latents: torch.Tensor, embeddings: torch.Tensor) -> None:
    if model.family != "sd":
        raise ValueError(f"model: LoRA training supports Stable Diffusion 1.x/2.x models, not {model.name}")
    if model.loras:
        raise ValueError("model: LoRAs are applied to this model; train on the base model")
    channels = int(model.network.config.in_channels)
    if latents.ndim != 4 or latents.shape[1] != channels:
        raise ValueError(f"latents: expected [batch, {channels}, height, width] latents of this model, got "
                         f"{tuple(latents.shape)}")
    if embeddings.ndim != 3 or embeddings.shape[0] != latents.shape[0]:
        raise ValueError(f"positive: expected one text embedding per latent ({latents.shape[0]}), got "
                         f"{tuple(embeddings.shape)}")
    width = int(model.network.config.cross_attention_dim)
    if embeddings.shape[2] != width:
        raise ValueError(f"positive: {embeddings.shape[2]}-wide text embeddings, but {model.name} takes {width}; "
                         "encode with this model's text encoder")


def _autocast(device: torch.device, weights_dtype: torch.dtype, compute_dtype: torch.dtype) -> Any:
    """On an accelerator a half-precision model computes in its own dtype (as `LoraTrainer` runs it), a float32
    one in `compute_dtype`; the CPU computes in float32."""
    dtype = weights_dtype if weights_dtype != torch.float32 else compute_dtype
    if device.type == "cpu" or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def train_on_latents(model: DiffusionModel, latents: torch.Tensor, embeddings: torch.Tensor,
                     settings: TrainingSettings, optimizer: str = "AdamW", loss_function: str = "MSE",
                     lora_dtype: torch.dtype = torch.float32, compute_dtype: torch.dtype | None = None,
                     existing: Mapping[str, torch.Tensor] | None = None,
                     on_step: StepCallback | None = None) -> LatentTrainingResult:
    """Train LoRA adapters on raw VAE `latents` [N, C, h, w] with `embeddings` [N, T, D] (row i conditions latent
    i): `settings.steps` optimizer steps of `settings.gradient_accumulation` micro-batches of up to
    `settings.batch_size` latents drawn without repeats. `compute_dtype` is what a float32 model computes in on an
    accelerator (`_autocast`); the adapters train in float32 and come back in `lora_dtype`. `existing` (ComfyUI
    layout) is the starting point instead of fresh adapters.
    `on_step(step, steps, losses)` follows every optimizer step and may raise to stop."""
    from diffusers import DDPMScheduler

    settings.check()
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if loss_function not in _LOSSES:
        raise ValueError(f"loss_function: unknown {loss_function!r}; known: {', '.join(LOSS_FUNCTIONS)}")
    _check_data(model, latents, embeddings)
    device, network = model.device, model.network
    with flags_restored(network):
        # 1. A trainable copy of the UNet with fresh (or the existing) adapters.
        unet = adapter_copy(network, UNET_TARGETS, settings, torch.Generator().manual_seed(settings.seed))
        names = ldm_layer_names(network)
        if existing is not None:
            _load_existing(unet, names, existing, settings.alpha, "existing_lora")
        if settings.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        parameters = list(adapter_parameters(unet).values())

        # 2. Optimizer, noise schedule, the data in the model's sampling space.
        chosen = _optimizer(optimizer, parameters, settings.learning_rate)
        noise_scheduler = DDPMScheduler.from_config(dict(model.scheduler_config))
        prediction_type = noise_scheduler.config.prediction_type
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"model: cannot train a model predicting {prediction_type!r}")
        samples = model.latent_format.process_in(latents.float()).to(device, model.dtype)
        texts = embeddings.to(device, model.dtype)
        criterion = _LOSSES[loss_function]
        autocast = _autocast(device, model.dtype, compute_dtype or model.dtype)

        # 3. The loop: every draw a function of (seed, micro-batch index).
        losses: list[float] = []
        accumulation, count = settings.gradient_accumulation, len(samples)
        for index in range(settings.steps * accumulation):
            generator = torch.Generator().manual_seed((settings.seed * 7_919 + index) % 2**63)
            rows = torch.randperm(count, generator=generator)[:settings.batch_size]
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(rows),), generator=generator)
            noise = torch.randn((len(rows), *samples.shape[1:]), generator=generator).to(device, samples.dtype)
            clean, timesteps = samples[rows.to(device)], timesteps.to(device)
            noisy = noise_scheduler.add_noise(clean, noise, timesteps)
            target = noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(clean, noise, timesteps)
            with autocast:
                prediction = unet(noisy, timesteps, encoder_hidden_states=texts[rows.to(device)],
                                  return_dict=False)[0]
            loss = criterion(prediction.float(), target.float())
            (loss / accumulation).backward()
            losses.append(float(loss.detach()))
            if (index + 1) % accumulation == 0:
                torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
                chosen.step()
                chosen.zero_grad(set_to_none=True)
                if on_step is not None:
                    on_step((index + 1) // accumulation, settings.steps, losses)
        return LatentTrainingResult(comfy_lora_state(unet, names, lora_dtype), losses)
