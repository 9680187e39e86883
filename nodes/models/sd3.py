"""Stable Diffusion 3 / 3.5 (MMDiT): reading diffusers folders and single-file checkpoints, the three-encoder CLIP
value (`Sd3Clip`) and how the shared sampler drives the transformer (`Sd3Sampling`, rectified flow).

Prompts are encoded as StableDiffusion3Pipeline encodes them: CLIP-L and OpenCLIP-G hidden states of the
penultimate layer side by side, zero-padded to the T5 width, followed by T5's 256 tokens; the pooled output is
both CLIPs' projections concatenated. Without T5 the conditioning holds the CLIP part only, and the sampler
appends the 256 zero tokens diffusers uses in T5's place (`Sd3Sampling.predict`), so any CLIP pair works with
any SD3 transformer. Sampling is flow matching with diffusers' flow schedulers, the shift in the MODEL's scheduler
config (`ModelSamplingSD3` changes it). LATENT holds 16-channel latents shifted and scaled by the VAE's factors.
Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from nodes.models import checkpoint as ckpt
from nodes.models.components import DiffusionModel, LoraPatch, Vae
from nodes.models.families import family_config
from nodes.models.lazy_module import LazyModule, resolve
from nodes.models.lora import TEXT_ENCODER, TEXT_ENCODER_2, TRANSFORMER
from nodes.models.multi_clip import TextEncoderSlot, check_layer, encode_chunks
from nodes.models.sampler import GuidanceBatch, UNetSampling
from nodes.models.text_encoding import Conditioning

PIPELINES = ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline")
TRANSFORMER_PREFIX = "model.diffusion_model."
PROBE = "joint_blocks.0.context_block.adaLN_modulation.1.bias"
CLIP_L = "text_encoders.clip_l.transformer."
CLIP_G = "text_encoders.clip_g.transformer."
T5 = "text_encoders.t5xxl.transformer."
VAE = "first_stage_model."

Place = Callable[[Any], Any]
Sd3Triple = tuple[DiffusionModel, "Sd3Clip | None", Vae]


def config() -> dict[str, Any]:
    return family_config("sd3")


# ---------------------------------------------------------------- sampling

@dataclass(frozen=True)
class FlowSampler:
    scheduler_class: str
    options: Mapping[str, Any]


# ComfyUI sampler names -> diffusers flow-matching schedulers (each checked against StableDiffusion3Pipeline)
FLOW_SAMPLERS: dict[str, FlowSampler] = {
    "euler": FlowSampler("FlowMatchEulerDiscreteScheduler", {}),
    "heun": FlowSampler("FlowMatchHeunDiscreteScheduler", {}),
}
# ComfyUI scheduler names -> sigma spacing options; "normal", "simple" and "sgm_uniform" are the shifted linear
# schedule SD3 was trained with
FLOW_SCHEDULERS: dict[str, Mapping[str, Any]] = {
    "normal": {}, "simple": {}, "sgm_uniform": {}, "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True}, "beta": {"use_beta_sigmas": True},
}


def make_flow_scheduler(config: Mapping[str, Any], sampler_name: str, scheduler_name: str) -> Any:
    import inspect

    import diffusers

    if sampler_name not in FLOW_SAMPLERS:
        raise ValueError(f"sampler_name: {sampler_name!r} is not available for SD3 models (flow matching); "
                         f"use one of: {', '.join(FLOW_SAMPLERS)}")
    if scheduler_name not in FLOW_SCHEDULERS:
        raise ValueError(f"scheduler: {scheduler_name!r} is not available for SD3 models; "
                         f"use one of: {', '.join(FLOW_SCHEDULERS)}")
    choice = FLOW_SAMPLERS[sampler_name]
    scheduler_class = getattr(diffusers, choice.scheduler_class)
    accepted = inspect.signature(scheduler_class.__init__).parameters
    spacing = FLOW_SCHEDULERS[scheduler_name]
    if any(option not in accepted for option in spacing):
        raise ValueError(f"scheduler: {scheduler_name!r} is not available with sampler {sampler_name!r} for SD3")
    if "use_beta_sigmas" in spacing:
        import importlib.util

        if importlib.util.find_spec("scipy") is None:
            raise ValueError("scheduler: 'beta' needs scipy, which is not installed")
    return scheduler_class.from_config(dict(config), **choice.options, **spacing)


class Sd3Sampling(UNetSampling):
    """The shared sampling loop's hooks for an SD3Transformer2DModel (rectified flow, velocity prediction)."""

    lora_component = TRANSFORMER
    lora_format = "sd3"

    def make_scheduler(self, config: Mapping[str, Any], sampler_name: str, scheduler_name: str, seed: int) -> Any:
        return make_flow_scheduler(config, sampler_name, scheduler_name)

    def noised(self, scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, first_timestep: torch.Tensor,
               start: int) -> torch.Tensor:
        """sigma * noise + (1 - sigma) * latents: pure noise at the first sigma of a full schedule (1)."""
        if start == 0 and hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        return scheduler.scale_noise(latents, first_timestep.reshape(1), noise)

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        pooled = []
        for options in guidance.options:
            if options.get("pooled_output") is None:
                raise ValueError("conditioning: SD3 needs the pooled CLIP-L and CLIP-G outputs; encode the prompt "
                                 "with an SD3 CLIP (the SD3 checkpoint's, or TripleCLIPLoader)")
            pooled.append(options["pooled_output"].reshape(1, -1).expand(batch, -1))
        return {"pooled_projections": torch.cat(pooled).to(device, dtype)}

    def predict(self, network: Any, scheduler: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        pooled = inputs["pooled_projections"]
        if pooled.shape[-1] != network.config.pooled_projection_dim:
            raise ValueError(f"conditioning: pooled text embedding of {pooled.shape[-1]} values, but this SD3 "
                             f"model takes {network.config.pooled_projection_dim}; use this model's CLIP")
        embeddings = with_t5_width(embeddings, int(network.config.joint_attention_dim))
        rows = model_input.shape[0]
        return network(hidden_states=model_input, timestep=timestep.expand(rows), encoder_hidden_states=embeddings,
                       pooled_projections=pooled, return_dict=False)[0]

    def denoised(self, scheduler: Any, output: Any, latents: torch.Tensor, prediction: torch.Tensor,
                 sampler_name: str) -> torch.Tensor:
        """x0 = x_t - sigma * v (the model predicts the velocity from data to noise)."""
        sigma = scheduler.sigmas[scheduler.step_index - 1]
        return latents - sigma * prediction


SD3_SAMPLING = Sd3Sampling()


def with_t5_width(embeddings: torch.Tensor, width: int) -> torch.Tensor:
    """CLIP-only embeddings (narrower than the transformer's joint width) padded to it and followed by the zero
    tokens StableDiffusion3Pipeline uses when there is no T5; T5-width embeddings as they are."""
    if embeddings.shape[-1] == width:
        return embeddings
    if embeddings.shape[-1] > width:
        raise ValueError(f"conditioning: text embeddings of width {embeddings.shape[-1]} do not fit this SD3 model "
                         f"(joint attention width {width})")
    padded = torch.nn.functional.pad(embeddings, (0, width - embeddings.shape[-1]))
    zeros = padded.new_zeros(embeddings.shape[0], config()["t5_max_length"], width)
    return torch.cat([padded, zeros], dim=1)


def with_shift(model: DiffusionModel, shift: float) -> DiffusionModel:
    """The MODEL sampled with another timestep shift (ComfyUI's ModelSamplingSD3)."""
    if not isinstance(model.sampling, Sd3Sampling):
        raise ValueError(f"model: ModelSamplingSD3 needs an SD3 model; {model.name} is not one")
    return dataclasses.replace(model, scheduler_config={**model.scheduler_config, "shift": float(shift)})


def sd3_model(transformer: Any, scheduler_config: Mapping[str, Any], name: str) -> DiffusionModel:
    settings = {key: value for key, value in scheduler_config.items() if not key.startswith("_")}
    return DiffusionModel(transformer, settings, name, sampling=SD3_SAMPLING)


# ---------------------------------------------------------------- CLIP: CLIP-L, CLIP-G and optional T5

@dataclass(frozen=True, eq=False)
class Sd3Clip:
    """CLIP of SD3: CLIP-L and CLIP-G with projections (read at `layer_index`, the penultimate by default) and an
    optional T5 encoder with its tokenizer; LoRAs apply to the two CLIPs."""

    clip_l: TextEncoderSlot
    clip_g: TextEncoderSlot
    t5_tokenizer: Any
    t5: Any
    name: str
    layer_index: int = -2
    loras: tuple[LoraPatch, ...] = ()
    lora_format = "sd3"

    @property
    def slots(self) -> list[TextEncoderSlot]:
        return [self.clip_l, self.clip_g]

    def with_layer(self, layer_index: int) -> "Sd3Clip":
        return dataclasses.replace(self, layer_index=check_layer(layer_index, self.slots, self.name))

    def with_lora(self, patch: LoraPatch) -> "Sd3Clip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def lora_modules(self) -> list[tuple[str, Any]]:
        return [(slot.lora_component, slot.model) for slot in self.slots]

    def offloadable(self) -> list[Any]:
        """The big text encoders that may be freed after encoding (T5; the CLIPs are small)."""
        return [] if self.t5 is None else [self.t5]

    def without_t5(self) -> "Sd3Clip":
        return dataclasses.replace(self, t5_tokenizer=None, t5=None)

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode(text, text, text)

    @torch.inference_mode()
    def encode(self, clip_l: str, clip_g: str, t5xxl: str) -> Conditioning:
        count = max(len(self.clip_l.chunks(clip_l)), len(self.clip_g.chunks(clip_g)))
        hidden_l, pooled_l = encode_chunks(self.clip_l, self.clip_l.chunks(clip_l, count), self.layer_index,
                                           self.loras)
        hidden_g, pooled_g = encode_chunks(self.clip_g, self.clip_g.chunks(clip_g, count), self.layer_index,
                                           self.loras)
        hidden = torch.cat([hidden_l, hidden_g], dim=-1)
        if self.t5 is not None:
            t5_hidden = self._encode_t5(t5xxl)
            hidden = torch.cat([torch.nn.functional.pad(hidden, (0, t5_hidden.shape[-1] - hidden.shape[-1])),
                                t5_hidden], dim=1)
        return [[hidden, {"pooled_output": torch.cat([pooled_l, pooled_g], dim=-1)}]]

    def _encode_t5(self, text: str) -> torch.Tensor:
        ids = self.t5_tokenizer(text, padding="max_length", max_length=config()["t5_max_length"], truncation=True,
                                add_special_tokens=True, return_tensors="pt").input_ids
        t5 = resolve(self.t5)
        return t5(ids.to(t5.device))[0].float().cpu()


def clip_slots(clip_l: Any, tokenizer_l: Any, clip_g: Any, tokenizer_g: Any) -> tuple[TextEncoderSlot, ...]:
    return TextEncoderSlot(tokenizer_l, clip_l, TEXT_ENCODER), TextEncoderSlot(tokenizer_g, clip_g, TEXT_ENCODER_2)


def make_clip(clip_l: Any, tokenizer_l: Any, clip_g: Any, tokenizer_g: Any, t5: Any, t5_tokenizer: Any,
              name: str) -> Sd3Clip:
    slot_l, slot_g = clip_slots(clip_l, tokenizer_l, clip_g, tokenizer_g)
    return Sd3Clip(slot_l, slot_g, t5_tokenizer if t5 is not None else None, t5, name, config()["clip_layer"])


# ---------------------------------------------------------------- diffusers folders

def load_folder(folder: Path, name: str, place: Place) -> Sd3Triple:
    """MODEL, CLIP and VAE of a StableDiffusion3Pipeline folder (`text_encoder_3` may be absent: no T5)."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import AutoTokenizer, CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel

    index = json.loads((folder / "model_index.json").read_text())
    has = {key for key, value in index.items() if isinstance(value, list) and value[0] is not None}
    options = {"local_files_only": True}
    transformer = place(SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer", **options).eval())
    vae = place(AutoencoderKL.from_pretrained(folder, subfolder="vae", **options).eval())
    encoders = [place(CLIPTextModelWithProjection.from_pretrained(folder, subfolder=sub, **options).eval())
                for sub in ("text_encoder", "text_encoder_2")]
    tokenizers = [CLIPTokenizer.from_pretrained(folder, subfolder=sub, **options)
                  for sub in ("tokenizer", "tokenizer_2")]
    t5 = t5_tokenizer = None
    if "text_encoder_3" in has:  # read on the first encode (LazyModule)
        t5 = LazyModule(lambda: place(T5EncoderModel.from_pretrained(folder, subfolder="text_encoder_3",
                                                                     **options).eval()), f"{name}/text_encoder_3")
        t5_tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer_3", **options)
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    clip = make_clip(encoders[0], tokenizers[0], encoders[1], tokenizers[1], t5, t5_tokenizer, name)
    return sd3_model(transformer, scheduler_config, name), clip, Vae(vae, name)


# ---------------------------------------------------------------- single-file checkpoints

def is_sd3_checkpoint(state: Mapping[str, torch.Tensor]) -> bool:
    return TRANSFORMER_PREFIX + PROBE in state or PROBE in state


def _indices(state: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(match.group(1)) for key in state if (match := pattern.match(key))})


def transformer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """SD3Transformer2DModel arguments read from original-layout (MMDiT) tensor shapes."""
    patch = state["x_embedder.proj.weight"]
    hidden, in_channels, patch_size = patch.shape[0], patch.shape[1], patch.shape[2]
    head_channels = config()["transformer"]["head_channels"]
    layers = _indices(state, "joint_blocks.")
    context = state["context_embedder.weight"]
    return {
        "sample_size": 128, "patch_size": patch_size, "in_channels": in_channels, "num_layers": len(layers),
        "attention_head_dim": head_channels, "num_attention_heads": hidden // head_channels,
        "joint_attention_dim": context.shape[1], "caption_projection_dim": context.shape[0],
        "pooled_projection_dim": state["y_embedder.mlp.0.weight"].shape[1],
        "out_channels": state["final_layer.linear.weight"].shape[0] // (patch_size * patch_size),
        "pos_embed_max_size": math.isqrt(state["pos_embed"].shape[1]),
        "dual_attention_layers": tuple(i for i in layers if f"joint_blocks.{i}.x_block.attn2.qkv.weight" in state),
        "qk_norm": "rms_norm" if "joint_blocks.0.x_block.attn.ln_q.weight" in state else None,
    }


def build_transformer(state: Mapping[str, torch.Tensor]) -> Any:
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    weights = {key.removeprefix(TRANSFORMER_PREFIX): tensor for key, tensor in state.items()
               if key.startswith(TRANSFORMER_PREFIX) or key in ("pos_embed",) or key.startswith("joint_blocks.")}
    settings = transformer_config(weights)
    with torch.device("meta"):
        transformer = SD3Transformer2DModel(**settings)
    converted = convert_sd3_transformer_checkpoint_to_diffusers(dict(weights))
    return ckpt._load_strict(transformer, converted, "SD3 transformer").eval()


def _clip_from_state(state: Mapping[str, torch.Tensor], prefix: str, settings: Mapping[str, Any]) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from nodes.models.sdxl import fit_keys

    text = prefix + "text_model."
    embedding = state[text + "embeddings.token_embedding.weight"]
    vocab_size, hidden_size = embedding.shape
    projection = state.get(prefix + "text_projection.weight")
    with ckpt.empty_weights():
        model = CLIPTextModelWithProjection(CLIPTextConfig(
            hidden_act=settings["hidden_act"], layer_norm_eps=settings["layer_norm_eps"], vocab_size=vocab_size,
            hidden_size=hidden_size, intermediate_size=state[text + "encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=len(_indices(state, text + "encoder.layers.")),
            num_attention_heads=max(1, hidden_size // settings["head_channels"]),
            max_position_embeddings=state[text + "embeddings.position_embedding.weight"].shape[0],
            projection_dim=hidden_size if projection is None else projection.shape[0],
            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1))
    weights = {key[len(prefix):]: tensor for key, tensor in state.items() if key.startswith(prefix)}
    if projection is None:  # SD3 files may leave CLIP-L's projection out: diffusers uses the identity
        weights["text_projection.weight"] = torch.eye(hidden_size)
    return ckpt._load_strict(model, fit_keys(weights, model), f"SD3 text encoder {prefix}").eval()


def load_checkpoint(state: Mapping[str, torch.Tensor], name: str, place: Place) -> Sd3Triple:
    """MODEL, CLIP (None when the file has no CLIP-L/CLIP-G: use TripleCLIPLoader) and VAE of an SD3 file."""
    from diffusers.loaders.single_file_utils import create_vae_diffusers_config_from_ldm

    from nodes.models import t5 as t5_files
    from nodes.models.tokenizer import clip_tokenizer

    family = config()
    try:
        transformer = place(build_transformer(state))
        ddconfig = ckpt.vae_ddconfig(state, VAE, family_config("sd1")["vae"]["ddconfig"])
        original = {"model": {"params": {"first_stage_config": {"params": {"ddconfig": ddconfig}},
                                         "scale_factor": family["vae"]["scaling_factor"]}}}
        vae_settings = create_vae_diffusers_config_from_ldm(original, state)
        vae_settings.update(latent_channels=ddconfig["z_channels"], shift_factor=family["vae"]["shift_factor"],
                            use_quant_conv=False, use_post_quant_conv=False)
        vae = place(ckpt.build_vae(state, vae_settings))
        clip = None
        if CLIP_L + "text_model.embeddings.token_embedding.weight" in state and \
                CLIP_G + "text_model.embeddings.token_embedding.weight" in state:
            clip_l = place(_clip_from_state(state, CLIP_L, family["text_encoder"]))
            clip_g = place(_clip_from_state(state, CLIP_G, family["text_encoder_2"]))
            t5 = t5_tokenizer = None
            if T5 + "shared.weight" in state:
                t5_state = {key[len(T5):]: tensor for key, tensor in state.items() if key.startswith(T5)}
                t5 = place(t5_files.build_t5_encoder(t5_state, "ckpt_name"))
                t5_tokenizer = t5_files.t5_tokenizer_for_vocab(t5.config.vocab_size, "ckpt_name")
            clip = make_clip(clip_l, clip_tokenizer(clip_l.config.vocab_size, family["tokenizer"]["pad_token"]),
                             clip_g, clip_tokenizer(clip_g.config.vocab_size, family["tokenizer_2"]["pad_token"]),
                             t5, t5_tokenizer, name)
    except (KeyError, IndexError, ZeroDivisionError) as error:
        raise ValueError(f"SD3 checkpoint tensors incomplete or mis-shaped ({error})") from error
    return sd3_model(transformer, family["scheduler"], name), clip, Vae(vae, name)


# ---------------------------------------------------------------- separate text encoder files (TripleCLIPLoader)

def _clip_width(state: Mapping[str, torch.Tensor]) -> int:
    for prefix in ("text_model.", ""):
        key = prefix + "embeddings.token_embedding.weight"
        if key in state:
            return int(state[key].shape[1])
    raise KeyError("embeddings.token_embedding.weight")


def clip_from_files(states: Mapping[str, Mapping[str, torch.Tensor]], name: str, place: Place,
                    reread: Callable[[str], Mapping[str, torch.Tensor]] | None = None) -> Sd3Clip:
    """SD3's CLIP from separate files (input name -> tensors, transformers key layout): two CLIPs and optionally
    one T5, in any order. T5 is recognised by its keys; of the CLIPs the narrower is CLIP-L (the first given when
    they are equally wide). With `reread` (an input name -> that file's tensors read again) T5 is built only when
    a prompt is first encoded, and can be freed after encoding."""
    from nodes.models import t5 as t5_files
    from nodes.models.tokenizer import clip_tokenizer

    family = config()
    t5_inputs = [input_name for input_name, state in states.items() if t5_files.is_t5_encoder(state)]
    clip_inputs = [input_name for input_name in states if input_name not in t5_inputs]
    if len(clip_inputs) != 2 or len(t5_inputs) > 1:
        raise ValueError(f"SD3 needs a CLIP-L and a CLIP-G file (and optionally one T5); found CLIP files "
                         f"{clip_inputs or 'none'} and T5 files {t5_inputs or 'none'}")
    clip_inputs.sort(key=lambda input_name: _clip_width(states[input_name]))
    encoders = []
    for input_name, role, pad in zip(clip_inputs, ("text_encoder", "text_encoder_2"), ("tokenizer", "tokenizer_2")):
        state = states[input_name]
        prefix = "" if any(key.startswith("text_model.") for key in state) else None
        if prefix is None:
            state = {"text_model." + key if not key.startswith("text_projection") else key: tensor
                     for key, tensor in state.items()}
        try:
            model = place(_clip_from_state(state, "", family[role]))
        except (KeyError, IndexError) as error:
            raise ValueError(f"{input_name}: CLIP text encoder tensors incomplete ({error})") from error
        encoders.append((model, clip_tokenizer(model.config.vocab_size, family[pad]["pad_token"])))
    t5 = t5_tokenizer = None
    if t5_inputs:
        t5_input = t5_inputs[0]
        t5_tokenizer = t5_files.t5_tokenizer_for_vocab(t5_files.t5_vocab_size(states[t5_input]), t5_input)
        if reread is None:
            t5 = place(t5_files.build_t5_encoder(states[t5_input], t5_input))
        else:
            t5 = LazyModule(lambda: place(t5_files.build_t5_encoder(reread(t5_input), t5_input)), t5_input)
    (clip_l, tokenizer_l), (clip_g, tokenizer_g) = encoders
    return make_clip(clip_l, tokenizer_l, clip_g, tokenizer_g, t5, t5_tokenizer, name)
