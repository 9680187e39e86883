"""LoRA fine-tuning of a Stable Diffusion UNet (and optionally its text encoder) with diffusers and peft.

`train_lora` reads like diffusers' `train_text_to_image_lora.py`: adapters on the attention projections, noised
cached latents, the epsilon or v-prediction target the model's scheduler config names (min-SNR weighting
optional), AdamW and a diffusers learning-rate schedule. The shared base model is never changed: training runs
on a structural copy of the module tree that shares the frozen base tensors (no second copy of the weights);
the adapters live only in the copy, and the `requires_grad` flags peft turns off on the shared tensors are put
back when training ends. Every random draw is a function of (seed, step), so a run resumed from a saved state
continues exactly as the uninterrupted run would. Knows nothing of nodes, folders or progress events: callers
pass paths and an `on_step` callback (which may raise to stop; saved checkpoints stay).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from diffusion.components import DiffusionModel
from diffusion.families.sd.text_encoding import SdClip
from training.dataset import ImageDataset
from training.lora_file import (
    TEXT_ENCODER_PREFIX,
    UNET_PREFIX,
    kohya_state_dict,
    lora_layers,
    save_lora,
    write_atomically,
)

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
LR_SCHEDULERS = ("constant", "cosine", "linear")
MAX_GRAD_NORM = 1.0
WEIGHT_DECAY = 1e-2
_OPTIMIZER_PACKAGES = {"AdamW": None, "AdamW8bit": "bitsandbytes", "Prodigy": "prodigyopt"}


def available_optimizers() -> list[str]:
    """AdamW always; AdamW 8-bit when bitsandbytes is installed, Prodigy when prodigyopt is."""
    return [name for name, package in _OPTIMIZER_PACKAGES.items()
            if package is None or importlib.util.find_spec(package) is not None]


@dataclass(frozen=True)
class TrainingSettings:
    rank: int
    alpha: float
    learning_rate: float
    steps: int
    batch_size: int = 1
    gradient_accumulation: int = 1
    optimizer: str = "AdamW"
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    train_text_encoder: bool = False
    min_snr_gamma: float = 0.0
    gradient_checkpointing: bool = False
    seed: int = 0
    save_every: int = 0

    def check(self) -> None:
        """ValueErrors naming the input for settings no training can run with."""
        for name in ("rank", "steps", "batch_size", "gradient_accumulation"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative, got {getattr(self, name)}")
        if not self.alpha > 0:
            raise ValueError(f"alpha: must be positive, got {self.alpha}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: must be positive, got {self.learning_rate}")
        if self.min_snr_gamma < 0:
            raise ValueError(f"min_snr_gamma: must not be negative (0 turns it off), got {self.min_snr_gamma}")
        if self.optimizer not in _OPTIMIZER_PACKAGES:
            raise ValueError(f"optimizer: unknown {self.optimizer!r}; known: {', '.join(_OPTIMIZER_PACKAGES)}")
        if self.optimizer not in available_optimizers():
            raise ValueError(f"optimizer: {self.optimizer} needs the {_OPTIMIZER_PACKAGES[self.optimizer]} package")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler: unknown {self.lr_scheduler!r}; known: {', '.join(LR_SCHEDULERS)}")

    def resume_key(self) -> dict[str, Any]:
        """What a saved state must share with this run to be continued (the step count may grow)."""
        key = dataclasses.asdict(self)
        for name in ("steps", "save_every", "gradient_checkpointing"):
            key.pop(name)
        return key


@dataclass
class TrainingResult:
    path: Path
    losses: list[float]
    learning_rates: list[float]
    first_step: int
    step_seconds: list[float] = field(default_factory=list)


StepCallback = Callable[[int, int, list[float]], None]


def base_model_hash(model: DiffusionModel, clip: SdClip) -> str:
    """sha256 of the UNet's and text encoder's weights (names and bytes), as "sha256:<hex>"."""
    digest = hashlib.sha256()
    for prefix, module in (("unet.", model.network), ("text_encoder.", clip.text_encoder)):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update((prefix + name).encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return "sha256:" + digest.hexdigest()


@contextlib.contextmanager
def flags_restored(*modules: Any) -> Iterator[None]:
    """Put back the `requires_grad` flag of every shared tensor when the block ends."""
    flags = [(parameter, parameter.requires_grad) for module in modules for parameter in module.parameters()]
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def adapter_copy(module: Any, targets: tuple[str, ...], settings: TrainingSettings,
                  generator: torch.Generator) -> Any:
    """A copy of `module`'s tree that shares its tensors, with a trainable float32 LoRA adapter added."""
    from peft import LoraConfig, inject_adapter_in_model

    shared = {id(tensor): tensor for tensor in [*module.parameters(), *module.buffers()]}
    trainable = copy.deepcopy(module, memo=shared)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, target_modules=list(targets),
                        init_lora_weights="gaussian")
    inject_adapter_in_model(config, trainable)
    for _, layer in lora_layers(trainable):
        down, up = layer.lora_A["default"], layer.lora_B["default"]
        down.float()
        up.float()
        with torch.no_grad():  # peft's gaussian init (std 1/rank), drawn from our generator
            down.weight.copy_(torch.randn(down.weight.shape, generator=generator) / settings.rank)
            up.weight.zero_()
    return trainable.train()


def adapter_parameters(module: Any) -> dict[str, torch.nn.Parameter]:
    return {name: parameter for name, parameter in module.named_parameters() if "lora_" in name}


def _make_optimizer(settings: TrainingSettings, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if settings.optimizer == "AdamW8bit":
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(parameters, lr=settings.learning_rate, weight_decay=WEIGHT_DECAY)
    if settings.optimizer == "Prodigy":
        import prodigyopt

        return prodigyopt.Prodigy(parameters, lr=settings.learning_rate, weight_decay=WEIGHT_DECAY)
    return torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=WEIGHT_DECAY)


def _make_lr_schedule(settings: TrainingSettings, optimizer: torch.optim.Optimizer) -> Any:
    from diffusers.optimization import get_scheduler

    name = "constant_with_warmup" if settings.lr_scheduler == "constant" else settings.lr_scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=settings.warmup_steps,
                         num_training_steps=settings.steps)


def text_embeddings(text_encoder: Any, ids: torch.Tensor, layer_index: int) -> torch.Tensor:
    """Hidden states of the CLIP layer prompts are read from (final layer norm applied, as diffusers' clip_skip)."""
    if layer_index == -1:
        return text_encoder(ids)[0]
    output = text_encoder(ids, output_hidden_states=True)
    final_norm = getattr(text_encoder, "final_layer_norm", None) or text_encoder.text_model.final_layer_norm
    return final_norm(output.hidden_states[layer_index])


def tokenize_captions(clip: SdClip, captions: tuple[str, ...]) -> torch.Tensor:
    length = int(clip.text_encoder.config.max_position_embeddings)
    return clip.tokenizer(list(captions), max_length=length, padding="max_length", truncation=True,
                          return_tensors="pt").input_ids


class _Sampler:
    """Which images, flips, timesteps and noise micro-batch `index` uses: a pure function of (seed, index)."""

    def __init__(self, dataset: ImageDataset, settings: TrainingSettings, timesteps: int) -> None:
        self.images = len(dataset)
        self.items = self.images * dataset.repeats
        self.flips = dataset.flipped_latents is not None
        self.settings = settings
        self.timesteps = timesteps
        self._order: tuple[int, torch.Tensor] | None = None

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + epoch)
            self._order = (epoch, torch.randperm(self.items, generator=generator) % self.images)
        return self._order[1]

    def draw(self, index: int, latent_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                  torch.Tensor]:
        size = self.settings.batch_size
        positions = range(index * size, (index + 1) * size)
        images = torch.stack([self._epoch_order(position // self.items)[position % self.items]
                              for position in positions])
        generator = torch.Generator().manual_seed((self.settings.seed * 7_919 + index) % 2**63)
        flips = torch.rand(size, generator=generator) < 0.5
        if not self.flips:
            flips = torch.zeros_like(flips)
        timesteps = torch.randint(0, self.timesteps, (size,), generator=generator)
        noise = torch.randn((size, *latent_shape), generator=generator)
        return images, flips, timesteps, noise


class LoraTrainer:
    """One training run: build with the models and data, then `run()`; see the module docstring."""

    def __init__(self, model: DiffusionModel, clip: SdClip, dataset: ImageDataset,
                 settings: TrainingSettings, output_path: Path, state_path: Path,
                 metadata: dict[str, Any] | None = None) -> None:
        settings.check()
        if model.loras or clip.loras:
            raise ValueError("model: LoRAs are applied to this model or text encoder; train on the base model")
        if model.family != "sd" or getattr(clip, "family", None) != "sd":
            raise ValueError(f"model: LoRA training supports Stable Diffusion 1.x/2.x models, not {model.name}")
        channels = int(model.network.config.in_channels)
        if dataset.latents.shape[1] != channels:
            raise ValueError(f"dataset: {dataset.latents.shape[1]}-channel latents, but {model.name} takes "
                             f"{channels} channels; encode the dataset with this model's VAE")
        self.model, self.clip, self.dataset, self.settings = model, clip, dataset, settings
        self.output_path, self.state_path = Path(output_path), Path(state_path)
        self.metadata = dict(metadata or {})

    def run(self, resume: bool = False, on_step: StepCallback | None = None) -> TrainingResult:
        with flags_restored(self.model.network, self.clip.text_encoder):
            return self._run(resume, on_step)

    def _run(self, resume: bool, on_step: StepCallback | None) -> TrainingResult:
        from diffusers import DDPMScheduler
        from diffusers.training_utils import compute_snr

        settings, model, device = self.settings, self.model, self.model.device
        base_hash = base_model_hash(model, self.clip)
        resume_key = json.dumps({**settings.resume_key(), "base": base_hash, "data": self.dataset.fingerprint,
                                 "clip_layer": self.clip.layer_index}, sort_keys=True)

        # 1. Trainable copies of the UNet (and the text encoder) with LoRA adapters.
        generator = torch.Generator().manual_seed(settings.seed)
        unet = adapter_copy(model.network, UNET_TARGETS, settings, generator)
        text_encoder = (adapter_copy(self.clip.text_encoder, TEXT_ENCODER_TARGETS, settings, generator)
                        if settings.train_text_encoder else None)
        if settings.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            if text_encoder is not None:
                text_encoder.gradient_checkpointing_enable()
        modules = {"unet": unet, **({"text_encoder": text_encoder} if text_encoder is not None else {})}
        parameters = {name: adapter_parameters(module) for name, module in modules.items()}

        # 2. Captions: encoded once, unless the text encoder is being trained.
        ids = tokenize_captions(self.clip, self.dataset.captions).to(device)
        cached_embeddings = None
        if text_encoder is None:
            with torch.no_grad():
                cached_embeddings = text_embeddings(self.clip.text_encoder, ids, self.clip.layer_index)

        # 3. Optimizer, learning-rate schedule, noise schedule.
        optimizer = _make_optimizer(settings, [p for group in parameters.values() for p in group.values()])
        lr_schedule = _make_lr_schedule(settings, optimizer)
        noise_scheduler = DDPMScheduler.from_config(dict(model.scheduler_config))
        prediction_type = noise_scheduler.config.prediction_type
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"model: cannot train a model predicting {prediction_type!r}")
        sampler = _Sampler(self.dataset, settings, noise_scheduler.config.num_train_timesteps)
        # the dataset's raw VAE latents in the model's sampling space (its family's latent format)
        latents_all = model.latent_format.process_in(self.dataset.latents).to(device, model.dtype)
        flipped_all = (model.latent_format.process_in(self.dataset.flipped_latents).to(device, model.dtype)
                       if self.dataset.flipped_latents is not None else latents_all)

        # 4. Resume from the saved state, if asked and there is one.
        losses: list[float] = []
        learning_rates: list[float] = []
        first_step = 0
        if resume and self.state_path.is_file():
            first_step, losses, learning_rates = self._load_state(resume_key, parameters, optimizer, lr_schedule)

        autocast = (torch.autocast(device.type, dtype=model.dtype)
                    if device.type != "cpu" and model.dtype != torch.float32 else contextlib.nullcontext())

        def micro_batch_loss(index: int) -> torch.Tensor:
            images, flips, timesteps, noise = sampler.draw(index, latents_all.shape[1:])
            flips_on_device = flips.to(device).view(-1, 1, 1, 1)
            images = images.to(device)
            latents = torch.where(flips_on_device, flipped_all[images], latents_all[images])
            noise, timesteps = noise.to(device, latents.dtype), timesteps.to(device)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            target = noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
            with autocast:
                if text_encoder is None:
                    embeddings = cached_embeddings[images]
                else:
                    embeddings = text_embeddings(text_encoder, ids[images], self.clip.layer_index)
                prediction = unet(noisy, timesteps, encoder_hidden_states=embeddings, return_dict=False)[0]
            if not settings.min_snr_gamma:
                return torch.nn.functional.mse_loss(prediction.float(), target.float())
            snr = compute_snr(noise_scheduler, timesteps)
            clipped = snr.clamp(max=settings.min_snr_gamma)
            weights = clipped / snr if prediction_type == "epsilon" else clipped / (snr + 1)
            per_sample = torch.nn.functional.mse_loss(prediction.float(), target.float(), reduction="none")
            return (per_sample.mean(dim=(1, 2, 3)) * weights).mean()

        # 5. The loop: accumulate, clip, step; checkpoints every `save_every` steps and at the end.
        trainable = [p for group in parameters.values() for p in group.values()]
        step_seconds: list[float] = []
        accumulation = settings.gradient_accumulation
        for step in range(first_step, settings.steps):
            started = time.perf_counter()
            learning_rates.append(float(lr_schedule.get_last_lr()[0]))
            total = 0.0
            for micro in range(accumulation):
                loss = micro_batch_loss(step * accumulation + micro)
                (loss / accumulation).backward()
                total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
            optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(total / accumulation)
            step_seconds.append(time.perf_counter() - started)
            done = step + 1
            if done == settings.steps or (settings.save_every and done % settings.save_every == 0):
                self._save(done, modules, base_hash, resume_key, parameters, optimizer, lr_schedule, losses,
                           learning_rates)
            if on_step is not None:
                on_step(done, settings.steps, losses)
        if first_step >= settings.steps and not self.output_path.is_file():
            self._save(first_step, modules, base_hash, resume_key, parameters, optimizer, lr_schedule, losses,
                       learning_rates)
        return TrainingResult(self.output_path, losses, learning_rates, first_step, step_seconds)

    def _save(self, step: int, modules: dict[str, Any], base_hash: str, resume_key: str,
              parameters: dict[str, dict[str, torch.nn.Parameter]], optimizer: torch.optim.Optimizer,
              lr_schedule: Any, losses: list[float], learning_rates: list[float]) -> None:
        """The LoRA file (what loaders read), then the state a later run resumes from; both atomically."""
        state = kohya_state_dict(modules["unet"], UNET_PREFIX)
        if "text_encoder" in modules:
            state.update(kohya_state_dict(modules["text_encoder"], TEXT_ENCODER_PREFIX))
        save_lora(self.output_path, state, {**self._metadata(base_hash), "ss_steps": step})
        payload = {
            "step": step, "resume_key": resume_key, "losses": list(losses), "learning_rates": list(learning_rates),
            "adapters": {name: {key: value.detach().cpu() for key, value in group.items()}
                         for name, group in parameters.items()},
            "optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict(),
        }
        write_atomically(self.state_path, lambda temporary: torch.save(payload, temporary))

    def _load_state(self, resume_key: str, parameters: dict[str, dict[str, torch.nn.Parameter]],
                    optimizer: torch.optim.Optimizer, lr_schedule: Any) -> tuple[int, list[float], list[float]]:
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        if state.get("resume_key") != resume_key:
            raise ValueError(f"resume: the saved state {self.state_path.name} was made with other settings, data or "
                             "base model; turn resume off to start over")
        with torch.no_grad():
            for name, group in parameters.items():
                for key, parameter in group.items():
                    parameter.copy_(state["adapters"][name][key])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        return int(state["step"]), list(state["losses"]), list(state["learning_rates"])

    def _metadata(self, base_hash: str) -> dict[str, Any]:
        settings, summary = self.settings, self.dataset.caption_summary()
        return {
            "ss_network_module": "networks.lora", "ss_network_dim": settings.rank, "ss_network_alpha": settings.alpha,
            "ss_max_train_steps": settings.steps, "ss_learning_rate": settings.learning_rate,
            "ss_lr_scheduler": settings.lr_scheduler, "ss_lr_warmup_steps": settings.warmup_steps,
            "ss_optimizer": settings.optimizer, "ss_batch_size_per_device": settings.batch_size,
            "ss_gradient_accumulation_steps": settings.gradient_accumulation, "ss_seed": settings.seed,
            "ss_min_snr_gamma": settings.min_snr_gamma, "ss_train_text_encoder": settings.train_text_encoder,
            "ss_resolution": f"({self.dataset.resolution}, {self.dataset.resolution})",
            "ss_num_train_images": len(self.dataset) * self.dataset.repeats,
            "ss_tag_frequency": json.dumps(summary["tag_frequency"]),
            "ss_sd_model_name": self.model.name, "ss_base_model_hash": base_hash,
            "prediction_type": self.model.prediction_type,
            "captions_summary": json.dumps({key: summary[key] for key in ("images", "distinct_captions", "examples")}),
            **self.metadata,
        }
