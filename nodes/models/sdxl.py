"""Stable Diffusion XL, base and refiner: reading single-file checkpoints (original layout) and diffusers folders,
the two-CLIP text encoder (CLIP value `SdxlClip`) and the UNet's added conditioning (`SdxlSampling`).

A single file is recognised from its tensors: the base has CLIP-L under `conditioner.embedders.0.transformer.`
and OpenCLIP-G under `conditioner.embedders.1.model.`, the refiner only OpenCLIP-G under
`conditioner.embedders.0.model.`. The UNet architecture is read from tensor shapes (levels, layers, transformer
depth per level, added-embedding width) with the family facts in `configs/sdxl.json` (64-channel attention heads);
the weights are re-keyed with diffusers' converters. The UNet gets, besides the text embeddings, the pooled
OpenCLIP-G projection and six size/crop numbers (base) or five size/aesthetic-score numbers (refiner), read from
the CONDITIONING options as ComfyUI stores them. Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from nodes.models import checkpoint as ckpt
from nodes.models.components import ClipTextEncoder, DiffusionModel, LoraPatch, Vae
from nodes.models.families import family_config
from nodes.models.lora import TEXT_ENCODER, TEXT_ENCODER_2
from nodes.models.multi_clip import TextEncoderSlot, check_layer, encode_chunks
from nodes.models.sampler import GuidanceBatch, UNetSampling
from nodes.models.text_encoding import Conditioning
from nodes.models.tokenizer import clip_tokenizer

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP_L = "conditioner.embedders.0.transformer.text_model."
BASE_CLIP_G = "conditioner.embedders.1.model."
REFINER_CLIP_G = "conditioner.embedders.0.model."
ADDED_EMBEDDING = UNET + "label_emb.0.0.weight"
BASE_TIME_IDS = 6  # height, width, crop top, crop left, target height, target width
REFINER_TIME_IDS = 5  # height, width, crop top, crop left, aesthetic score
PIPELINES = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline")

Place = Callable[[Any], Any]
SdxlTriple = tuple[DiffusionModel, "SdxlClip", Vae]


def config() -> dict[str, Any]:
    return family_config("sdxl")


def is_sdxl_checkpoint(state: Mapping[str, torch.Tensor]) -> bool:
    return ADDED_EMBEDDING in state and (BASE_CLIP_G + "token_embedding.weight" in state
                                         or REFINER_CLIP_G + "token_embedding.weight" in state)


def is_refiner_checkpoint(state: Mapping[str, torch.Tensor]) -> bool:
    return REFINER_CLIP_G + "token_embedding.weight" in state and CLIP_L + "embeddings.token_embedding.weight" \
        not in state


# ---------------------------------------------------------------- conditioning: the UNet's added inputs

@dataclass(frozen=True)
class SdxlSampling(UNetSampling):
    """SDXL's UNet call: added `text_embeds` (pooled OpenCLIP-G) and `time_ids` from each conditioning entry.

    Missing sizes default as in ComfyUI (768, no crop, target = size; aesthetic score 6 for positive and 2.5 for
    negative prompts), so plain CLIPTextEncode conditioning works too."""

    refiner: bool
    pooled_width: int

    def time_ids(self, options: Mapping[str, Any], negative: bool) -> list[float]:
        defaults = config()
        width = float(options.get("width", defaults["default_size"]))
        height = float(options.get("height", defaults["default_size"]))
        crop = [float(options.get("crop_h", 0)), float(options.get("crop_w", 0))]
        if self.refiner:
            score = defaults["aesthetic_score"]["negative" if negative else "positive"]
            return [height, width, *crop, float(options.get("aesthetic_score", score))]
        return [height, width, *crop, float(options.get("target_height", height)),
                float(options.get("target_width", width))]

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        negatives = len(guidance.negative_weights)
        pooled_rows, time_rows = [], []
        for index, options in enumerate(guidance.options):
            pooled = options.get("pooled_output")
            if pooled is None or pooled.shape[-1] != self.pooled_width:
                found = "none" if pooled is None else f"{pooled.shape[-1]} values"
                raise ValueError(f"conditioning: this SDXL model needs a pooled text embedding of {self.pooled_width} "
                                 f"values (encode prompts with the SDXL checkpoint's CLIP); found {found}")
            pooled_rows.append(pooled.reshape(-1, pooled.shape[-1]).expand(batch, -1))
            time_rows.append(torch.tensor([self.time_ids(options, index < negatives)]).expand(batch, -1))
        return {"added_cond_kwargs": {"text_embeds": torch.cat(pooled_rows).to(device, dtype),
                                      "time_ids": torch.cat(time_rows).to(device, dtype)}}


def sampling_for(unet: Any, refiner: bool) -> SdxlSampling:
    time_ids = REFINER_TIME_IDS if refiner else BASE_TIME_IDS
    added = unet.add_embedding.linear_1.in_features
    return SdxlSampling(refiner, added - time_ids * int(unet.config.addition_time_embed_dim))


# ---------------------------------------------------------------- CLIP: two text encoders

@dataclass(frozen=True, eq=False)
class SdxlClip:
    """CLIP of SDXL: CLIP-L (absent in the refiner) and OpenCLIP-G with projection, read at `layer_index`
    (-2, the penultimate layer, by default), and LoRAs to apply to either."""

    clip_l: TextEncoderSlot | None
    clip_g: TextEncoderSlot
    name: str
    layer_index: int = -2
    loras: tuple[LoraPatch, ...] = ()

    @property
    def refiner(self) -> bool:
        return self.clip_l is None

    @property
    def slots(self) -> list[TextEncoderSlot]:
        return [slot for slot in (self.clip_l, self.clip_g) if slot is not None]

    def with_layer(self, layer_index: int) -> "SdxlClip":
        return dataclasses.replace(self, layer_index=check_layer(layer_index, self.slots, self.name))

    def with_lora(self, patch: LoraPatch) -> "SdxlClip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def lora_modules(self) -> list[tuple[str, Any]]:
        return [(slot.lora_component, slot.model) for slot in self.slots]

    def g_only(self) -> "SdxlClip":
        """The OpenCLIP-G part alone (what the refiner's conditioning uses)."""
        return dataclasses.replace(self, clip_l=None)

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode(text, text, {})

    def encode(self, text_g: str, text_l: str, options: Mapping[str, Any]) -> Conditioning:
        """[[CLIP-L and OpenCLIP-G hidden states side by side, {"pooled_output": G's projection, **options}]];
        the shorter prompt is padded with empty chunks to the longer one's length."""
        g_chunks = self.clip_g.chunks(text_g)
        l_chunks = self.clip_l.chunks(text_l, len(g_chunks)) if self.clip_l else []
        g_chunks = self.clip_g.chunks(text_g, len(l_chunks))
        hidden, pooled = encode_chunks(self.clip_g, g_chunks, self.layer_index, self.loras)
        if self.clip_l is not None:
            hidden_l, _ = encode_chunks(self.clip_l, l_chunks, self.layer_index, self.loras)
            hidden = torch.cat([hidden_l, hidden], dim=-1)
        return [[hidden, {"pooled_output": pooled, **options}]]


# ---------------------------------------------------------------- single-file checkpoints

def _indices(state: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(match.group(1)) for key in state if (match := pattern.match(key))})


def unet_config(state: Mapping[str, torch.Tensor], pooled_width: int, refiner: bool) -> dict[str, Any]:
    """The diffusers UNet2DConditionModel config of an SDXL UNet, read from its LDM tensors' shapes."""
    input_blocks = _indices(state, UNET + "input_blocks.")
    downsamplers = [i for i in input_blocks if UNET + f"input_blocks.{i}.0.op.weight" in state]
    levels = len(downsamplers) + 1
    layers = (len(input_blocks) - 1 - len(downsamplers)) // levels
    channels, depths, context_dim, linear = [], [], None, True
    for level in range(levels):
        first = UNET + f"input_blocks.{1 + level * (layers + 1)}."
        channels.append(state[first + "0.out_layers.3.weight"].shape[0])
        depth = len(_indices(state, first + "1.transformer_blocks."))
        depths.append(depth)
        if depth and context_dim is None:
            context_dim = state[first + "1.transformer_blocks.0.attn2.to_k.weight"].shape[1]
            linear = state[first + "1.proj_in.weight"].ndim == 2
    middle_depth = len(_indices(state, UNET + "middle_block.1.transformer_blocks."))
    time_ids = REFINER_TIME_IDS if refiner else BASE_TIME_IDS
    added_width = state[ADDED_EMBEDDING].shape[1] - pooled_width
    if added_width <= 0 or added_width % time_ids:
        raise ValueError(f"the UNet's added embedding ({state[ADDED_EMBEDDING].shape[1]} inputs) does not fit "
                         f"{time_ids} size numbers and a {pooled_width}-value pooled text embedding")
    head_channels = config()["unet"]["num_head_channels"]
    return {
        "sample_size": 128, "in_channels": state[UNET + "input_blocks.0.0.weight"].shape[1],
        "out_channels": state[UNET + "out.2.weight"].shape[0], "layers_per_block": layers,
        "block_out_channels": channels,
        "down_block_types": ["CrossAttnDownBlock2D" if depth else "DownBlock2D" for depth in depths],
        "up_block_types": ["CrossAttnUpBlock2D" if depth else "UpBlock2D" for depth in reversed(depths)],
        # diffusers' mid block takes the last entry; levels without attention ignore theirs
        "transformer_layers_per_block": [depth or middle_depth for depth in depths[:-1]] + [middle_depth],
        "attention_head_dim": [max(1, width // head_channels) for width in channels],
        "cross_attention_dim": context_dim, "use_linear_projection": linear,
        "addition_embed_type": "text_time", "addition_time_embed_dim": added_width // time_ids,
        "projection_class_embeddings_input_dim": state[ADDED_EMBEDDING].shape[1],
    }


def _text_config(embedding: torch.Tensor, positions: torch.Tensor, layers: int, intermediate: int,
                 base: Mapping[str, Any], projection_dim: int | None = None) -> Any:
    from transformers import CLIPTextConfig

    vocab_size, hidden_size = embedding.shape
    settings = {key: value for key, value in base.items() if key in ("hidden_act", "layer_norm_eps")}
    return CLIPTextConfig(
        **settings, vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=max(1, hidden_size // base["head_channels"]),
        max_position_embeddings=positions.shape[0], projection_dim=projection_dim or hidden_size,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1)


def fit_keys(weights: Mapping[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights keyed as `model` names them (transformers 5 keys CLIPTextModel without "text_model.",
    CLIPTextModelWithProjection with it); position ids dropped."""
    wants_prefix = any(key.startswith("text_model.") for key in model.state_dict())
    fitted = {}
    for key, tensor in weights.items():
        if key.endswith("position_ids"):
            continue
        plain = key.removeprefix("text_model.")
        is_text_model = not plain.startswith("text_projection")
        fitted["text_model." + plain if wants_prefix and is_text_model else plain] = tensor
    return fitted


def build_clip_l(state: Mapping[str, torch.Tensor], prefix: str, base: Mapping[str, Any]) -> Any:
    from transformers import CLIPTextModel

    config = _text_config(state[prefix + "embeddings.token_embedding.weight"],
                          state[prefix + "embeddings.position_embedding.weight"],
                          len(_indices(state, prefix + "encoder.layers.")),
                          state[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0], base)
    with ckpt.empty_weights():
        model = CLIPTextModel(config)
    weights = {key[len(prefix):]: tensor for key, tensor in state.items() if key.startswith(prefix)}
    return ckpt._load_strict(model, fit_keys(weights, model), "CLIP-L text encoder").eval()


def build_clip_g(state: Mapping[str, torch.Tensor], prefix: str, base: Mapping[str, Any]) -> Any:
    """OpenCLIP-G (all layers: the pooled projection reads the last) as a CLIPTextModelWithProjection."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextModelWithProjection

    projection = state[prefix + "text_projection"]
    config = _text_config(state[prefix + "token_embedding.weight"], state[prefix + "positional_embedding"],
                          len(_indices(state, prefix + "transformer.resblocks.")),
                          state[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0], base,
                          projection.shape[1])
    with ckpt.empty_weights():
        model = CLIPTextModelWithProjection(config)
    converted = convert_open_clip_checkpoint(model, state, prefix=prefix)
    return ckpt._load_strict(model, fit_keys(converted, model), "OpenCLIP-G text encoder").eval()


def _vae_from_state(state: Mapping[str, torch.Tensor]) -> Any:
    from diffusers.loaders.single_file_utils import create_vae_diffusers_config_from_ldm

    ddconfig = ckpt.vae_ddconfig(state, VAE, family_config("sd1")["vae"]["ddconfig"])
    original = {"model": {"params": {"first_stage_config": {"params": {"ddconfig": ddconfig}},
                                     "scale_factor": config()["vae"]["scaling_factor"]}}}
    return ckpt.build_vae(state, create_vae_diffusers_config_from_ldm(original, state))


def load_checkpoint(state: Mapping[str, torch.Tensor], name: str, place: Place) -> SdxlTriple:
    """MODEL, CLIP and VAE of an SDXL base or refiner single-file checkpoint; ValueError if it does not fit."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    family = config()
    refiner = is_refiner_checkpoint(state)
    try:
        clip_g_prefix = REFINER_CLIP_G if refiner else BASE_CLIP_G
        clip_g = place(build_clip_g(state, clip_g_prefix, family["text_encoder_2"]))
        clip_l = None if refiner else place(build_clip_l(state, CLIP_L, family["text_encoder"]))
        unet_settings = unet_config(state, int(clip_g.config.projection_dim), refiner)
        with torch.device("meta"):
            unet = UNet2DConditionModel(**unet_settings)
        unet = ckpt._load_strict(unet, convert_ldm_unet_checkpoint(state, unet_settings), "UNet").eval()
        vae = place(_vae_from_state(state))
    except (KeyError, IndexError, ZeroDivisionError) as error:
        kind = "refiner" if refiner else "base"
        raise ValueError(f"SDXL {kind} checkpoint tensors incomplete or mis-shaped ({error})") from error
    return _triple(place(unet), clip_l, clip_g, vae, dict(family["scheduler"]), name, refiner)


def _triple(unet: Any, clip_l: Any, clip_g: Any, vae: Any, scheduler_config: dict[str, Any], name: str,
            refiner: bool) -> SdxlTriple:
    family = config()
    pad_l, pad_g = family["tokenizer"]["pad_token"], family["tokenizer_2"]["pad_token"]
    slot_l = None if clip_l is None else TextEncoderSlot(
        clip_tokenizer(clip_l.config.vocab_size, pad_l), clip_l, TEXT_ENCODER)
    slot_g = TextEncoderSlot(clip_tokenizer(clip_g.config.vocab_size, pad_g), clip_g, TEXT_ENCODER_2)
    return _assemble(unet, slot_l, slot_g, vae, scheduler_config, name, refiner)


def _assemble(unet: Any, slot_l: TextEncoderSlot | None, slot_g: TextEncoderSlot, vae: Any,
              scheduler_config: dict[str, Any], name: str, refiner: bool) -> SdxlTriple:
    scheduler_config = {key: value for key, value in scheduler_config.items() if not key.startswith("_")}
    model = DiffusionModel(unet, scheduler_config, name, sampling=sampling_for(unet, refiner))
    clip = SdxlClip(slot_l, slot_g, name, config()["clip_layer"])
    return model, clip, Vae(vae, name)


# ---------------------------------------------------------------- diffusers folders

def load_folder(folder: Path, name: str, place: Place) -> SdxlTriple:
    """MODEL, CLIP and VAE of a StableDiffusionXL(Img2Img)Pipeline folder (the refiner has no `text_encoder`)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    index = json.loads((folder / "model_index.json").read_text())
    has = {key for key, value in index.items() if isinstance(value, list) and value[0] is not None}
    options = {"local_files_only": True}
    unet = place(UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **options).eval())
    vae = place(AutoencoderKL.from_pretrained(folder, subfolder="vae", **options).eval())
    clip_g = place(CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2", **options).eval())
    slot_g = TextEncoderSlot(CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2", **options), clip_g,
                             TEXT_ENCODER_2)
    slot_l = None
    if "text_encoder" in has:
        clip_l = place(CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **options).eval())
        slot_l = TextEncoderSlot(CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **options), clip_l,
                                 TEXT_ENCODER)
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    refiner = bool(index.get("requires_aesthetics_score")) or slot_l is None
    return _assemble(unet, slot_l, slot_g, vae, scheduler_config, name, refiner)


def require_sdxl_clip(clip: Any) -> SdxlClip:
    """`clip` if it is an SDXL CLIP; a ValueError naming the input otherwise."""
    if not isinstance(clip, SdxlClip):
        kind = "an SD1/SD2" if isinstance(clip, ClipTextEncoder) else f"a {type(clip).__name__}"
        raise ValueError(f"clip: this node needs an SDXL CLIP, got {kind} text encoder")
    return clip
