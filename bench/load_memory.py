"""Peak resident memory while the engine loads a real-size single-file checkpoint, per family, over the file's size.

Families with real architectures and seeded random weights: SD1.5 (fp32 file, 4.3 GB), SDXL base (fp16 file,
6.9 GB: UNet, CLIP-L, OpenCLIP-G, VAE), the Lumina Image 2.0 transformer alone (bf16 file, 5.2 GB, ComfyUI's
original layout, loaded as UNETLoader loads it), the Z-Image Turbo transformer alone (bf16, 12.3 GB, the original
layout) and its Qwen3 4B text encoder (bf16, 8 GB, CLIPLoader type lumina2), Qwen-Image's VAE (bf16, Wan's
original layout, VAELoader) and its Qwen2.5-VL 7B text encoder with the vision tower (bf16, 15.5 GB, the published
layout, CLIPLoader type qwen_image), HiDream's Llama 3.1 8B text encoder (bf16, 15 GB, `model.*` keys, read as
QuadrupleCLIPLoader reads it), FLUX.2 [klein] 4B's transformer as a Q8_0 GGUF file (4.2 GB, UNETLoader, kept
quantized), Qwen-Image 2.1's VAE (bf16, 0.68 GB, ComfyUI's original Wan 2.2 style layout with one-tap
3-D causal convolutions, VAELoader), its 7.1B transformer alone (bf16, 14.2 GB, ComfyUI's layout with fused
SwiGLU gate and up weights, UNETLoader) and its Qwen3-VL 8B text encoder with the vision tower (bf16, 16.3 GB, the
published layout, CLIPLoader type qwen_image), Chroma's 8.9B transformer alone (bf16, 17.8 GB, Lodestone's
original layout as `Chroma1-HD.safetensors` has it, UNETLoader), FLUX.1 [dev]'s 11.9B transformer as a Q8_0 GGUF
file (12.7 GB, BFL's layout as city96's `flux1-dev-Q8_0.gguf`, UNETLoader, kept quantized), SD3.5 Large's
all-in-one checkpoint (bf16, 16.5 GB: the 8.1B MMDiT and the VAE in the original layout, as
`sd3.5_large.safetensors`, CheckpointLoaderSimple), and in fp8 as ComfyUI ships them FLUX.1 [dev]'s transformer
(11.9 GB, BFL's layout, `flux1-dev-fp8`), HiDream-I1 Full's (17.1 GB, `hidream_i1_full_fp8`) and Qwen-Image's
(20.4 GB, `qwen_image_fp8_e4m3fn`), which UNETLoader
keeps in fp8 here (their bf16 copies would not fit the model budget). Those transformers are built on the meta
device and made a block at a time (FLUX.1's bf16 weights, 23.8 GB, would not fit). Each load runs under the
server's default model budget of this machine's RAM. The largest safetensors files are measured in bf16 only: in
fp32 they would not fit this machine's 24 GB beside their files; the GGUF and fp8 files too (their quantized weights
keep their size in any dtype). FLUX.2 [dev]'s Mistral (30 of its layers: 35 GB in bf16, its fp8 file 24 GB) does not
fit here at all.
Each file is loaded by the model manager in a fresh process,
once per model dtype (fp32, bf16); the peak is the kernel's high-water mark reset after the imports (Linux
`clear_refs`), as in `bench/engine_vs_diffusers.py`, which also compares SD1.5 with diffusers. The files are
written once into `--models-dir` (about 150 GB of disk for all rows: a row's files can be deleted once it is
measured; writing SDXL needs ~14 GB of RAM for a minute, Qwen-Image 2.1's transformer ~15 GB, FLUX.1's GGUF ~13 GB,
SD3.5 Large ~16 GB, Chroma ~18 GB, and the fp8 files their own size for a few minutes). A file the engine fails
to load is named under the table (exit status 1), the other rows kept.
Run: `OMP_NUM_THREADS=1 .venv/bin/python -m bench.load_memory --models-dir DIR [--families sd15,sdxl,lumina2,...]`.
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Callable

import torch

from bench.engine_vs_diffusers import PROJECT_DIR, _sd15_models, loading_peak


def _sdxl_models(models_dir: Path, with_folder: bool = False) -> str:
    """SDXL base's real UNet, VAE, CLIP-L and OpenCLIP-G architectures with seeded random weights, in fp16: the
    single-file checkpoint, and with `with_folder` the diffusers folder of the same weights too."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from diffusion.encoders.clip_tokenizer import clip_tokenizer
    from diffusion.families.sdxl import demo as sdxl_tiny
    from diffusion.families.sdxl.loading import config as sdxl_config

    name = "random-sdxl"  # main() finds the files as random-<family>
    path = models_dir / "checkpoints" / f"{name}.safetensors"
    if path.exists() and (not with_folder or (models_dir / "diffusers" / name / "model_index.json").exists()):
        return name
    torch.manual_seed(0)
    family = sdxl_config()

    def text_config(width: int, layers: int, act: str, pad: int) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=4 * width,
                              num_hidden_layers=layers, num_attention_heads=width // 64, max_position_embeddings=77,
                              hidden_act=act, projection_dim=width, bos_token_id=49406, eos_token_id=49407,
                              pad_token_id=pad)

    # Each part goes to fp16 as soon as it is built, so fp32 copies of all of them never coexist.
    text_encoder = CLIPTextModel(text_config(768, 12, "quick_gelu", 49407)).eval().half()
    text_encoder_2 = CLIPTextModelWithProjection(text_config(1280, 32, "gelu", 0)).eval().half()
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
        cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816).eval().half()
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=1024, scaling_factor=family["vae"]["scaling_factor"]).eval().half()
    scheduler = {key: value for key, value in family["scheduler"].items() if not key.startswith("_")}
    components = sdxl_tiny.TinySdxl(False, unet, vae, text_encoder, text_encoder_2,
                                    clip_tokenizer(49408, family["tokenizer"]["pad_token"]),
                                    clip_tokenizer(49408, family["tokenizer_2"]["pad_token"]), scheduler)
    sdxl_tiny.write_checkpoint(components, path)
    if with_folder:
        sdxl_tiny.write_diffusers_folder(components, models_dir / "diffusers" / name)
    return name


def _lumina2_models(models_dir: Path) -> str:
    """Lumina Image 2.0's real transformer architecture (2.6B parameters) with seeded random weights, made in bf16
    and saved in ComfyUI's original layout (fused q/k/v), as `lumina_2_model_bf16.safetensors` is."""
    from diffusers import Lumina2Transformer2DModel
    from safetensors.torch import save_file

    from diffusion.families.lumina2.demo import original_layout

    name = "random-lumina2"
    path = models_dir / "diffusion_models" / f"{name}.safetensors"
    if path.exists():
        return name
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: an fp32 copy would need twice the memory
    try:
        transformer = Lumina2Transformer2DModel(
            sample_size=128, patch_size=2, in_channels=16, hidden_size=2304, num_layers=26, num_refiner_layers=2,
            num_attention_heads=24, num_kv_heads=8, multiple_of=256, axes_dim_rope=(32, 32, 32),
            cap_feat_dim=2304).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in original_layout(transformer.state_dict()).items()},
              str(path))
    return name


def _zimage_models(models_dir: Path) -> str:
    """Z-Image Turbo's real transformer architecture (6.2B parameters: diffusers' defaults) with seeded random
    weights, made in bf16 and saved in ComfyUI's original layout (fused q/k/v), as `z_image_turbo_bf16.safetensors`
    is."""
    from diffusers import ZImageTransformer2DModel
    from safetensors.torch import save_file

    from diffusion.families.zimage.demo import original_layout

    name = "random-zimage"
    path = models_dir / "diffusion_models" / f"{name}.safetensors"
    if path.exists():
        return name
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: an fp32 copy would not fit beside it
    try:
        transformer = ZImageTransformer2DModel().eval()
    finally:
        torch.set_default_dtype(torch.float32)
    state = original_layout(transformer.state_dict())
    del transformer
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return name


def _seeded_bf16(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """`build()` after seeding with 0, its parameters made in bf16 (an fp32 copy would need twice the memory)."""
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        return build().eval()
    finally:
        torch.set_default_dtype(torch.float32)


def _flux2_gguf_models(models_dir: Path) -> str:
    """FLUX.2 [klein] 4B's transformer architecture (5 double and 20 single blocks, 24 heads of 128; 3.9B
    parameters) with seeded random weights, Q8_0-quantized as a GGUF file in diffusers' names (UNETLoader keeps
    the quantized weights: the loaded model should be about the file's size, half of bf16)."""
    from diffusers import Flux2Transformer2DModel

    from diffusion.gguf import write_gguf

    name = "random-flux2-gguf"
    path = models_dir / "diffusion_models" / f"{name}.gguf"
    if path.exists():
        return name
    transformer = _seeded_bf16(lambda: Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=5, num_single_layers=20, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=7680, timestep_guidance_channels=256, mlp_ratio=3.0,
        axes_dims_rope=(32, 32, 32, 32), guidance_embeds=False))
    _write_once(path, lambda target: write_gguf(transformer.state_dict(), target, "flux2"))
    return name


def _write_once(path: Path, write: Callable[[Path], None]) -> None:
    """`write(target)` into a `.partial` file renamed to `path` once complete: a write cut short is not taken for
    the file next time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    write(partial)
    partial.replace(path)


def _on_meta(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """`build()` on the meta device with bf16 parameters: the architecture, its weights taking no memory."""
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            return build().eval()
    finally:
        torch.set_default_dtype(torch.float32)


def _seeded_copy(part: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A CPU copy of `part` (built on the meta device) with seeded random weights, each layer initialized by its own
    `reset_parameters`; the parameters of modules without one (diffusers' RMSNorm) made ones (weights) or zeros, as
    those modules make them."""
    torch.manual_seed(seed)
    part = copy.deepcopy(part).to_empty(device="cpu")
    with torch.no_grad():
        for module in part.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:
                for name, parameter in module.named_parameters(recurse=False):
                    parameter.fill_(1.0 if name == "weight" else 0.0)
    return part


def _part_by_part(model: torch.nn.Module, convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                  materialize: bool) -> Iterator[dict[str, torch.Tensor]]:
    """The state dict of `model` (built on the meta device) through the layout converter `convert`, a part at a
    time: each block of its module lists, each of its other top-level modules whole. With `materialize` the parts
    get seeded random bf16 weights (part `i` seeded with `i`, whatever was made before), else they stay meta tensors
    (names and shapes). `convert` converts a whole model and counts blocks from 0: a block is shown to it as block 0
    and its converted names numbered back. Only for models whose state dicts hold no buffers (`to_empty` leaves
    those unset)."""
    parts: list[tuple[str, torch.nn.Module]] = []
    for name, child in model.named_children():
        parts += ([(f"{name}.{index}", block) for index, block in child.named_children()]
                  if isinstance(child, torch.nn.ModuleList) else [(name, child)])
    for seed, (name, part) in enumerate(parts):
        if materialize:
            part = _seeded_copy(part, seed)
        stem, _, index = name.partition(".")
        state = {f"{stem}.0.{key}" if index else f"{name}.{key}": value for key, value in part.state_dict().items()}
        if len(state) != len(list(part.parameters())):
            raise ValueError(f"{name} has buffers in its state dict, which a part made from the meta device lacks")
        del part
        if not state:
            continue
        converted = convert(state)
        del state
        if index:  # block 0's converted names (`double_blocks.0.img_mlp.0.weight`) numbered back
            converted = {_renumbered(key, index): value for key, value in converted.items()}
        yield converted
        del converted  # before the next part is made


def _renumbered(key: str, index: str) -> str:
    head, _, rest = key.partition(".0.")
    return f"{head}.{index}.{rest}"


class _MadeAsRead(Mapping[str, torch.Tensor]):
    """A state dict whose tensors are made a part at a time by `_part_by_part` as they are read: read in order
    (as `write_gguf` reads it, once), only one part's weights exist at a time; read out of order, the parts are made
    again from the start (the same weights: each part has its own seed)."""

    def __init__(self, model: torch.nn.Module,
                 convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> None:
        self._make = lambda materialize: _part_by_part(model, convert, materialize)
        self._keys = {key: None for part in self._make(False) for key in part}  # the names in order, from meta
        self._parts: Iterator[dict[str, torch.Tensor]] = iter(())
        self._part: dict[str, torch.Tensor] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        if key not in self._part:
            self._part = {}  # the last part's tensors go before the next part is made
            for _ in range(2):
                self._part = next((part for part in self._parts if key in part), {})
                if self._part:
                    break
                self._parts = self._make(True)
        return self._part[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _flux_gguf_models(models_dir: Path) -> str:
    """FLUX.1 [dev]'s transformer architecture (diffusers' defaults with the guidance embedder: 19 double and 38
    single blocks of width 3072; 11.9B parameters) with seeded random weights, Q8_0-quantized as a GGUF file in
    Black Forest Labs' layout, as city96's `flux1-dev-Q8_0.gguf` is (UNETLoader keeps the weights quantized). Its
    bf16 weights (23.8 GB) would not fit this machine: the model is built on the meta device and each block is made,
    converted and quantized in turn, `write_gguf` holding the quantized tensors only (12.7 GB)."""
    from diffusers import FluxTransformer2DModel

    from diffusion.families.flux.demo import bfl_layout
    from diffusion.gguf import write_gguf

    name = "random-flux-gguf"
    path = models_dir / "diffusion_models" / f"{name}.gguf"
    if path.exists():
        return name
    transformer = _on_meta(lambda: FluxTransformer2DModel(guidance_embeds=True))
    _write_once(path, lambda target: write_gguf(_MadeAsRead(transformer, bfl_layout), target, "flux"))
    return name


def _fp8_transformer_file(models_dir: Path, name: str, transformer: torch.nn.Module,
                          convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> str:
    """`diffusion_models/{name}.safetensors`: `transformer` (built on the meta device) with seeded random weights
    through the layout converter `convert`, its weights of two or more dimensions in float8_e4m3fn and the rest in
    bf16, as ComfyUI's `*_fp8_e4m3fn` files are; made a block at a time, only the fp8 file's tensors held."""
    from safetensors.torch import save_file

    path = models_dir / "diffusion_models" / f"{name}.safetensors"
    if path.exists():
        return name
    state = {key: value.to(torch.float8_e4m3fn) if value.ndim >= 2 else value
             for key, value in _MadeAsRead(transformer, convert).items()}
    _write_once(path, lambda target: save_file(state, str(target)))
    return name


def _flux_fp8_models(models_dir: Path) -> str:
    """FLUX.1 [dev]'s transformer (11.9B parameters) in fp8, BFL's layout, as ComfyUI's `flux1-dev-fp8` transformer
    files are (11.9 GB; its 23.8 GB in bf16 would not fit this machine, so UNETLoader keeps the fp8 weights)."""
    from diffusers import FluxTransformer2DModel

    from diffusion.families.flux.demo import bfl_layout

    return _fp8_transformer_file(models_dir, "random-flux-fp8",
                                 _on_meta(lambda: FluxTransformer2DModel(guidance_embeds=True)), bfl_layout)


def _hidream_fp8_models(models_dir: Path) -> str:
    """HiDream-I1 Full's transformer (16 double and 32 single blocks of width 2560 with four routed experts each,
    T5 and Llama 3.1 8B widths of 4096; 17.1B parameters) in fp8, as ComfyUI's `hidream_i1_full_fp8.safetensors` is
    (17.1 GB; 34 GB in bf16 would not fit this machine, so UNETLoader keeps the fp8 weights)."""
    from diffusers import HiDreamImageTransformer2DModel

    from diffusion.families.hidream.loading import config

    fixed = config()["transformer"]
    blocks = 16 + 32
    return _fp8_transformer_file(models_dir, "random-hidream-fp8", _on_meta(lambda: HiDreamImageTransformer2DModel(
        patch_size=fixed["patch_size"], in_channels=16, caption_channels=[4096, 4096],
        axes_dims_rope=tuple(fixed["axes_dims_rope"]),
        llama_layers=[min(block, fixed["llama_layer_count"] - 1) for block in range(blocks)])), lambda state: state)


def _qwenimage_fp8_models(models_dir: Path) -> str:
    """Qwen-Image's transformer (diffusers' defaults: 60 blocks of width 3072; 20.4B parameters) in fp8, as
    ComfyUI's `qwen_image_fp8_e4m3fn.safetensors` is (20.4 GB; 41 GB in bf16 would not fit this machine, so
    UNETLoader keeps the fp8 weights)."""
    from diffusers import QwenImageTransformer2DModel

    return _fp8_transformer_file(models_dir, "random-qwenimage-fp8",
                                 _on_meta(lambda: QwenImageTransformer2DModel()), lambda state: state)


def _chroma_original_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers ChromaTransformer2DModel state dict (or part of one) in Lodestone's original layout: FLUX's BFL
    block names without the per-block modulation, and the approximator's own (`in_layer`/`out_layer`, RMSNorm
    `scale`), as `tests/nodes/test_chroma.py` writes it."""
    from diffusion.families.flux.demo import bfl_layout

    approximator = {_approximator_name(key): value for key, value in state.items()
                    if key.startswith("distilled_guidance_layer.")}
    padded = {key: value for key, value in state.items() if not key.startswith("distilled_guidance_layer.")}
    placeholder = torch.zeros(1)  # the modulation FLUX's converter expects, dropped again below
    for key in [key for key in padded if key.endswith(".attn.norm_q.weight")]:
        block = key.removesuffix("attn.norm_q.weight")
        modulations = ("norm1.linear", "norm1_context.linear") if block.startswith("transformer_blocks.") \
            else ("norm.linear",)
        padded.update({f"{block}{module}.{kind}": placeholder for module in modulations for kind in ("weight", "bias")})
    return {**{key: value for key, value in bfl_layout(padded).items()
               if ".img_mod." not in key and ".txt_mod." not in key and ".modulation." not in key}, **approximator}


def _approximator_name(key: str) -> str:
    key = key.replace(".linear_1.", ".in_layer.").replace(".linear_2.", ".out_layer.")
    return key.removesuffix(".weight") + ".scale" if ".norms." in key else key


def _chroma_models(models_dir: Path) -> str:
    """Chroma's transformer architecture (diffusers' defaults, as Chroma1-HD's: 19 double and 38 single blocks of
    width 3072 and the 5-layer approximator; 8.9B parameters) with seeded random weights, in bf16 and Lodestone's
    original layout, as `chroma-unlocked-v*.safetensors` and `Chroma1-HD.safetensors` are. Built on the meta
    device and made a block at a time, each block converted as it is made: the converted file's tensors (17.8 GB)
    are all that is held, never a second copy of the fused ones."""
    from diffusers import ChromaTransformer2DModel
    from safetensors.torch import save_file

    name = "random-chroma"
    path = models_dir / "diffusion_models" / f"{name}.safetensors"
    if path.exists():
        return name
    transformer = _on_meta(lambda: ChromaTransformer2DModel())
    state: dict[str, torch.Tensor] = {}
    for part in _part_by_part(transformer, _chroma_original_layout, True):
        state.update({key: value.contiguous() for key, value in part.items()})
    _write_once(path, lambda target: save_file(state, str(target)))
    return name


def _sd35_large_models(models_dir: Path) -> str:
    """SD3.5 Large's MMDiT (38 joint blocks of width 2432 with RMS q/k norms, 8.1B parameters) and 16-channel VAE
    with seeded random weights, in bf16 and the original layout (`model.diffusion_model.joint_blocks.*`,
    `first_stage_model.*`), as `sd3.5_large.safetensors` is (its text encoders are separate files). Converted by
    the tiny SD3's `transformer_to_original` handed the only reference to the state dict, so that each fused q/k/v
    replaces its parts instead of being held beside the whole model (+2.7 GB)."""
    from types import SimpleNamespace

    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from safetensors.torch import save_file

    from diffusion.families import ldm_export
    from diffusion.families.sd3.demo import transformer_to_original
    from diffusion.families.sd3.detection import TRANSFORMER_PREFIX
    from diffusion.families.sd3.loading import config as sd3_config

    name = "random-sd35-large"
    path = models_dir / "checkpoints" / f"{name}.safetensors"
    if path.exists():
        return name
    family = sd3_config()["vae"]
    vae = _seeded_bf16(lambda: AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024,
        scaling_factor=family["scaling_factor"], shift_factor=family["shift_factor"], use_quant_conv=False,
        use_post_quant_conv=False))
    state = ldm_export.vae_to_ldm(vae.state_dict(), vae.config)
    del vae
    transformer = _seeded_bf16(lambda: SD3Transformer2DModel(
        sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64, num_attention_heads=38,
        joint_attention_dim=4096, caption_projection_dim=2432, pooled_projection_dim=2048, out_channels=16,
        pos_embed_max_size=192, qk_norm="rms_norm"))
    weights, settings = transformer.state_dict(), transformer.config
    del transformer
    weights["pos_embed.pos_embed"] = weights["pos_embed.pos_embed"].to(torch.bfloat16)  # an fp32 buffer when built
    for key in [key for key in weights if ".attn.norm_" in key]:  # the q/k norms the tiny SD3 has not
        block, _, norm = key.partition(".attn.norm_")  # transformer_blocks.N, q.weight or added_q.weight
        stream = "context_block" if norm.startswith("added_") else "x_block"
        state[f"{TRANSFORMER_PREFIX}joint_blocks.{block.split('.')[1]}.{stream}.attn.ln_"
              f"{norm.removeprefix('added_')}"] = weights.pop(key)
    handed = [weights]
    del weights
    original = transformer_to_original(SimpleNamespace(config=settings, state_dict=handed.pop))
    state.update({TRANSFORMER_PREFIX + key: value for key, value in original.items()})
    del original
    _write_once(path, lambda target: save_file({key: value.contiguous() for key, value in state.items()}, str(target)))
    return name


def _language_model_file(models_dir: Path, name: str, build: Callable[[], torch.nn.Module]) -> str:
    """`text_encoders/{name}.safetensors`: the language model `build()` makes (seeded, in bf16: an fp32 copy would
    not fit beside it), saved with `model.*` keys as the published files are; a file already there is kept."""
    from safetensors.torch import save_file

    path = models_dir / "text_encoders" / f"{name}.safetensors"
    if path.exists():
        return name
    model = _seeded_bf16(build)
    state = {f"model.{key}": value for key, value in model.state_dict().items()}
    del model
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return name


def _zimage_text_encoder_models(models_dir: Path) -> str:
    """Qwen3 4B's architecture (Z-Image's text encoder, 4.0B parameters without the output head) with seeded random
    weights, as `qwen_3_4b.safetensors` is."""
    from transformers import Qwen3Config, Qwen3Model

    return _language_model_file(models_dir, "random-zimage-text-encoder", lambda: Qwen3Model(Qwen3Config(
        vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=40960,
        tie_word_embeddings=True)))


def _hidream_llama_models(models_dir: Path) -> str:
    """Llama 3.1 8B's architecture (HiDream's fourth text encoder, 7.5B parameters without the output head) with
    seeded random weights, as `llama_3.1_8b_instruct_*.safetensors` is."""
    from transformers import LlamaConfig, LlamaModel

    from diffusion.families.hidream.loading import config as hidream_config

    settings = hidream_config()["llama"]
    return _language_model_file(models_dir, "random-hidream-llama", lambda: LlamaModel(LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=settings["head_dim"], rms_norm_eps=settings["rms_norm_eps"],
        rope_parameters=dict(settings["rope_parameters"]),
        max_position_embeddings=settings["max_position_embeddings"])))


def _seeded_vae_file(models_dir: Path, name: str, build: Callable[[], torch.nn.Module],
                     layout: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> str:
    """`vae/{name}.safetensors`: the VAE `build()` makes (seed 0, in bf16), saved in `layout`; a file already there
    is kept."""
    from safetensors.torch import save_file

    path = models_dir / "vae" / f"{name}.safetensors"
    if path.exists():
        return name
    torch.manual_seed(0)
    vae = build().eval().to(torch.bfloat16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in layout(vae.state_dict()).items()}, str(path))
    return name


def _qwenimage_vae_models(models_dir: Path) -> str:
    """Qwen-Image's VAE architecture (Wan 2.1's, 127M parameters) with seeded random weights, in bf16 and Wan's
    original layout, as `qwen_image_vae.safetensors` is."""
    from diffusers import AutoencoderKLQwenImage

    from diffusion.families.qwenimage.demo import wan_original_layout

    return _seeded_vae_file(models_dir, "random-qwenimage-vae", AutoencoderKLQwenImage, wan_original_layout)


def _qwenimage_text_encoder_models(models_dir: Path) -> str:
    """Qwen2.5-VL 7B's architecture (language model and vision tower, 8.3B parameters; without the output head,
    which encoding does not use) with seeded random weights, made in bf16 and saved in the published layout."""
    from safetensors.torch import save_file
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    from diffusion.families.qwenimage.demo import published_text_encoder_layout

    name = "random-qwenimage-text-encoder"
    path = models_dir / "text_encoders" / f"{name}.safetensors"
    if path.exists():
        return name
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6,
                         max_position_embeddings=128000, rope_parameters={
                             "rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31], in_channels=3))
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: an fp32 copy would not fit
    try:
        model = Qwen2_5_VLModel(config).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    state = published_text_encoder_layout({f"model.{key}": value for key, value in model.state_dict().items()})
    del model
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return name


def _qwenimage21_vae_models(models_dir: Path) -> str:
    """Qwen-Image 2.1's VAE architecture (Wan 2.2 style, diffusers' defaults: base widths 96/144, 64 latent channels,
    RGBA; 338M parameters) with seeded random weights, in bf16 and ComfyUI's original layout (3-D causal
    convolutions of one temporal tap), as `qwen_image_2.1_vae_bf16.safetensors` is."""
    from diffusers import AutoencoderKLQwenImage21

    from diffusion.families import wan22_vae_layout

    return _seeded_vae_file(models_dir, "random-qwenimage21-vae", AutoencoderKLQwenImage21,
                            wan22_vae_layout.diffusers_to_comfy)


def _qwenimage21_transformer_models(models_dir: Path) -> str:
    """Qwen-Image 2.1's real transformer architecture (diffusers' defaults: 32 blocks of width 4096, 7.1B
    parameters) with seeded random weights, made in bf16 and saved in ComfyUI's layout (fused SwiGLU gate and up
    projections, under `model.diffusion_model.`), as `qwen_image_2.1_*_bf16.safetensors` is. Fused a block at a
    time, each block's separate weights dropped as soon as they are: fusing them all at once would hold a second
    copy of every gate and up weight (6.4 GB) beside the model's 14 GB."""
    from diffusers import QwenImage21Transformer2DModel
    from safetensors.torch import save_file

    from diffusion.families.qwenimage21.demo import comfy_transformer_layout

    name = "random-qwenimage21-transformer"
    path = models_dir / "diffusion_models" / f"{name}.safetensors"
    if path.exists():
        return name
    transformer = _seeded_bf16(lambda: QwenImage21Transformer2DModel())
    state = transformer.state_dict()
    del transformer  # `state` holds the only references to the weights now
    groups: dict[str, list[str]] = {}  # a block's MLP weights together, every other tensor alone
    for key in state:
        groups.setdefault(key.partition(".img_mlp.")[0], []).append(key)
    comfy: dict[str, torch.Tensor] = {}
    for keys in groups.values():
        comfy.update(comfy_transformer_layout({key: state.pop(key) for key in keys}))
    _write_once(path, lambda target: save_file({key: value.contiguous() for key, value in comfy.items()}, str(target)))
    return name


def _qwenimage21_text_encoder_models(models_dir: Path) -> str:
    """Qwen3-VL 8B's architecture (language model and vision tower with its DeepStack mergers, 8.1B parameters;
    without the output head, which encoding does not use) with seeded random weights, made in bf16 and saved in the
    published layout (`model.language_model.*`, `model.visual.*`), as `qwen3vl_8b_bf16.safetensors` holds it."""
    from safetensors.torch import save_file
    from transformers import Qwen3VLConfig, Qwen3VLModel

    name = "random-qwenimage21-text-encoder"
    path = models_dir / "text_encoders" / f"{name}.safetensors"
    if path.exists():
        return name
    torch.manual_seed(0)
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
                         max_position_embeddings=262144, rope_parameters={
                             "rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                             "mrope_interleaved": True}),
        vision_config=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                           deepstack_visual_indexes=[8, 16, 24]))
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: an fp32 copy would not fit
    try:
        model = Qwen3VLModel(config).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    state = {f"model.{key}": value for key, value in model.state_dict().items()}
    del model
    _write_once(path, lambda target: save_file(state, str(target)))
    return name


FAMILIES: dict[str, Callable[[Path], str]] = {"sd15": _sd15_models, "sdxl": _sdxl_models,
                                              "lumina2": _lumina2_models, "zimage": _zimage_models,
                                              "zimage-text-encoder": _zimage_text_encoder_models,
                                              "qwenimage-vae": _qwenimage_vae_models,
                                              "qwenimage-text-encoder": _qwenimage_text_encoder_models,
                                              "qwenimage21-vae": _qwenimage21_vae_models,
                                              "qwenimage21-transformer": _qwenimage21_transformer_models,
                                              "qwenimage21-text-encoder": _qwenimage21_text_encoder_models,
                                              "hidream-llama": _hidream_llama_models,
                                              "flux2-gguf": _flux2_gguf_models, "flux-gguf": _flux_gguf_models,
                                              "chroma": _chroma_models, "sd35-large": _sd35_large_models,
                                              "flux-fp8": _flux_fp8_models, "hidream-fp8": _hidream_fp8_models,
                                              "qwenimage-fp8": _qwenimage_fp8_models}
# rows measured as one file that is not a checkpoint: (its models folder, how the engine loads it)
PARTS = {"lumina2": ("diffusion_models", "engine-network"), "zimage": ("diffusion_models", "engine-network"),
         "zimage-text-encoder": ("text_encoders", "engine-text-encoder:lumina2"),
         "qwenimage-vae": ("vae", "engine-vae"),
         "qwenimage-text-encoder": ("text_encoders", "engine-text-encoder:qwen_image"),
         "qwenimage21-vae": ("vae", "engine-vae"),
         "qwenimage21-transformer": ("diffusion_models", "engine-network"),
         "qwenimage21-text-encoder": ("text_encoders", "engine-text-encoder:qwen_image"),
         "hidream-llama": ("text_encoders", "engine-llama"),
         "flux2-gguf": ("diffusion_models", "engine-network"),
         "flux-gguf": ("diffusion_models", "engine-network"), "chroma": ("diffusion_models", "engine-network"),
         "flux-fp8": ("diffusion_models", "engine-network"), "hidream-fp8": ("diffusion_models", "engine-network"),
         "qwenimage-fp8": ("diffusion_models", "engine-network")}
DTYPES = (torch.float32, torch.bfloat16)
# in fp32 these would not fit this machine beside their file (33, 25, 16, 30, 28, 35, 36 and 33 GB); the GGUF files'
# quantized weights keep their size in any dtype
ROW_DTYPES = {"qwenimage-text-encoder": (torch.bfloat16,), "zimage": (torch.bfloat16,),
              "zimage-text-encoder": (torch.bfloat16,), "hidream-llama": (torch.bfloat16,),
              "qwenimage21-transformer": (torch.bfloat16,), "qwenimage21-text-encoder": (torch.bfloat16,),
              "flux2-gguf": (torch.bfloat16,), "flux-gguf": (torch.bfloat16,), "chroma": (torch.bfloat16,),
              "sd35-large": (torch.bfloat16,), "flux-fp8": (torch.bfloat16,), "hidream-fp8": (torch.bfloat16,),
              "qwenimage-fp8": (torch.bfloat16,)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args()
    rows, failures = [], []
    for family in args.families.split(","):
        began = time.perf_counter()
        # Written by a child process, so that the memory it took is the system's again before measuring.
        subprocess.run([sys.executable, "-c", f"from pathlib import Path; from bench.load_memory import FAMILIES; "
                        f"print(FAMILIES[{family!r}](Path({str(args.models_dir)!r})))"],
                       check=True, cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True)
        print(f"{family}: files ready in {time.perf_counter() - began:.0f} s", flush=True)
        folder, which = PARTS.get(family, ("checkpoints", "engine"))
        path = next((args.models_dir / folder).glob(f"random-{family}.*"))
        size = path.stat().st_size
        for dtype in ROW_DTYPES.get(family, DTYPES):
            try:
                peak = loading_peak(which, path, path.parent, dtype)
            except RuntimeError as error:  # the engine did not load the file: said under the table, the rows kept
                reason = str(error).strip().splitlines()[-1]
                failures.append(f"{family} in {str(dtype).removeprefix('torch.')}: {reason}")
                continue
            added = peak["peak"] - peak["before"]
            rows.append((family, size, dtype, peak["model_bytes"], added / size, added / peak["model_bytes"],
                         peak["peak"] / size))
    print(f"\n  {'family':<24}{'file':>10}{'model dtype':>13}{'model':>10}{'peak added / file':>19}"
          f"{'peak added / model':>20}{'process / file':>16}")
    for family, size, dtype, model_bytes, over_file, over_model, total in rows:
        print(f"  {family:<24}{size / 1e9:>8.2f}GB{str(dtype).removeprefix('torch.'):>13}{model_bytes / 1e9:>8.2f}GB"
              f"{over_file:>18.2f}x{over_model:>19.2f}x{total:>15.2f}x")
    for failure in failures:
        print(f"  load failed: {failure}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
