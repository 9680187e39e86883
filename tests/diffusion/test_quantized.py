"""fp8 files kept in fp8 (ComfyUI's plain `*_fp8_e4m3fn` and `*_fp8_scaled` with a scale per tensor): every
family's tiny transformer, the text encoders and the all-in-one checkpoints load with their linear layers holding
the fp8 weights (`QuantizedLinear`), computing exactly what the file upcast as it loads computes, in about half
the memory, and read as their values by merging and saving; `Fp8Weight` keeps its format and scale through the
layout conversions' operations; the manager keeps fp8 where ComfyUI does."""
import copy
import importlib

import pytest
import torch
from safetensors.torch import save_file

from diffusion import loading, registry
from diffusion.files import read_safetensors
from diffusion.manager import ModelManager
from diffusion.memory import MemoryBudget, modules_of, size_in_bytes
from diffusion.merging import effective_state_dict
from diffusion.quantized import Fp8Weight, QuantizedLinear, fp8_weight
from tests.diffusion.test_gguf import TRANSFORMERS


class KeepingFp8(ModelManager):
    """A manager for which the upcast model never fits."""

    def keeps_fp8_weights(self, parameters: int) -> bool:
        return True


def _fp8_file(state: dict, path, scaled: bool) -> None:
    """`state` as ComfyUI writes fp8 files: 2-D tensors in float8_e4m3fn, the weights with a per-tensor
    `scale_weight` and the `scaled_fp8` marker when `scaled`."""
    written = {}
    for key, value in state.items():
        if value.ndim != 2:
            written[key] = value.contiguous()
        elif scaled and key.endswith(".weight"):
            scale = value.abs().max().clamp(min=1e-8) / 448
            written[key] = (value / scale).to(torch.float8_e4m3fn).contiguous()
            written[key.removesuffix("weight") + "scale_weight"] = scale.reshape(1)
        else:
            written[key] = value.to(torch.float8_e4m3fn).contiguous()
    if scaled:
        written["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_file(written, str(path))


def _bytes(network: torch.nn.Module) -> int:
    return sum(value.numel() * value.element_size() for value in network.parameters())


@pytest.mark.parametrize("scaled", [False, True], ids=["fp8_e4m3fn", "fp8_scaled"])
@pytest.mark.parametrize("family", sorted(TRANSFORMERS))
def test_fp8_transformer_keeps_fp8_layers_equal_to_the_upcast_ones(family, scaled, tmp_path, tiny_models_dir):
    package, constant = TRANSFORMERS[family]
    registry.family(family).make_demo_models(tiny_models_dir)
    name = getattr(importlib.import_module(f"diffusion.families.{package}.demo"), constant)
    _fp8_file(read_safetensors(tiny_models_dir / "diffusion_models" / name, "unet_name"), tmp_path / "fp8.safetensors",
              scaled)
    upcast = loading.load_diffusion_model(ModelManager(torch.device("cpu"), torch.bfloat16),
                                          tmp_path / "fp8.safetensors").network
    kept = loading.load_diffusion_model(KeepingFp8(torch.device("cpu"), torch.bfloat16),
                                        tmp_path / "fp8.safetensors").network
    layers = {name: module for name, module in kept.named_modules() if isinstance(module, QuantizedLinear)}
    assert layers and all(isinstance(module.weight, Fp8Weight) for module in layers.values())
    assert kept.dtype == torch.bfloat16  # what the network reports and computes in
    assert _bytes(kept) < 0.6 * _bytes(upcast)
    generator = torch.Generator().manual_seed(0)
    for layer_name, layer in layers.items():
        inputs = torch.randn(3, layer.in_features, generator=generator).bfloat16()
        assert torch.equal(layer(inputs), upcast.get_submodule(layer_name)(inputs)), layer_name
    upcast_state = upcast.state_dict()
    values = effective_state_dict(kept, "transformer", ())  # what merging, saving and LoRA extraction read
    assert values.keys() == upcast_state.keys()
    assert all(torch.equal(value, upcast_state[key]) for key, value in values.items())


def test_fp8_weight_keeps_format_and_scale_through_layout_operations():
    values = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    weight = fp8_weight((values / 0.5).to(torch.float8_e5m2), scale=0.5)
    expected = (values / 0.5).to(torch.float8_e5m2).float() * 0.5
    assert weight.dtype == torch.uint8 and not weight.is_floating_point()
    pieces = weight.split([2, 4])
    assert all(isinstance(piece, Fp8Weight) and piece.format == torch.float8_e5m2 and piece.scale == 0.5
               for piece in pieces)
    assert torch.equal(pieces[1].dequantize(torch.float32), expected[2:])
    joined = torch.cat([pieces[1], pieces[0]])
    assert isinstance(joined, Fp8Weight) and torch.equal(joined.float(), torch.cat([expected[2:], expected[:2]]))
    assert torch.equal(weight.to(torch.bfloat16), expected.bfloat16())  # conversions give the values
    other = fp8_weight(values.to(torch.float8_e5m2))
    mixed = torch.cat([pieces[0], other])  # different scales: their values
    assert not isinstance(mixed, Fp8Weight) and mixed.dtype == torch.float32
    assert torch.equal(mixed, torch.cat([expected[:2], values.to(torch.float8_e5m2).float()]))
    layer = QuantizedLinear(4, 6, bias=False)
    layer.weight = weight
    layer.to(torch.float64)  # converting a module leaves its bytes alone
    inputs = torch.randn(2, 4, dtype=torch.float64)
    assert torch.equal(layer(inputs), inputs @ expected.double().T)
    copied = copy.deepcopy(layer)
    assert isinstance(copied.weight, Fp8Weight) and copied.weight.scale == 0.5
    assert torch.equal(copied(inputs), layer(inputs))


def test_manager_keeps_fp8_where_the_upcast_model_would_not_fit_its_budget():
    parameters = 1000
    unlimited = ModelManager(torch.device("cpu"), torch.bfloat16)
    roomy = ModelManager(torch.device("cpu"), torch.bfloat16, MemoryBudget({"cpu": 2 * parameters}))
    tight = ModelManager(torch.device("cpu"), torch.bfloat16, MemoryBudget({"cpu": 2 * parameters - 1}))
    tight_fp32 = ModelManager(torch.device("cpu"), torch.float32, MemoryBudget({"cpu": 3 * parameters}))
    assert not unlimited.keeps_fp8_weights(parameters)
    assert not roomy.keeps_fp8_weights(parameters)
    assert tight.keeps_fp8_weights(parameters)
    assert tight_fp32.keeps_fp8_weights(parameters)


def test_fp8_file_is_upcast_where_it_fits(tmp_path, tiny_models_dir):
    """With room for the upcast model (the manager's budget), an fp8 file is converted as it loads: no cast per
    layer and step."""
    registry.family("flux").make_demo_models(tiny_models_dir)
    from diffusion.families.flux.demo import DEMO_FLUX_TRANSFORMER

    _fp8_file(read_safetensors(tiny_models_dir / "diffusion_models" / DEMO_FLUX_TRANSFORMER, "unet_name"),
              tmp_path / "fp8.safetensors", scaled=False)
    roomy = ModelManager(torch.device("cpu"), torch.bfloat16, MemoryBudget({"cpu": 10**9}))
    tight = ModelManager(torch.device("cpu"), torch.bfloat16, MemoryBudget({"cpu": 10**5}))
    assert not any(isinstance(module, QuantizedLinear)
                   for module in loading.load_diffusion_model(roomy, tmp_path / "fp8.safetensors").network.modules())
    assert any(isinstance(module, QuantizedLinear)
               for module in loading.load_diffusion_model(tight, tmp_path / "fp8.safetensors").network.modules())


TEXT_ENCODERS = {  # file: (family writing it, its module's constant, ComfyUI's CLIPLoader type)
    "t5": ("flux", "DEMO_FLUX_T5", "chroma"), "llama": ("hidream", "DEMO_HIDREAM_LLAMA", "hidream"),
    "qwen2.5-vl": ("qwenimage", "DEMO_QWEN_IMAGE_TEXT_ENCODER", "qwen_image"),
    "qwen3-vl": ("qwenimage21", "DEMO_QWEN_IMAGE21_TEXT_ENCODER", "qwen_image"),
    "qwen3": ("zimage", "DEMO_ZIMAGE_TEXT_ENCODER", "lumina2"),
    "mistral": ("flux2", "DEMO_FLUX2_MISTRAL", "flux2"), "gemma2": ("lumina2", "DEMO_LUMINA2_TEXT_ENCODER", "lumina2")}


@pytest.mark.parametrize("scaled", [False, True], ids=["fp8_e4m3fn", "fp8_scaled"])
@pytest.mark.parametrize("encoder", sorted(TEXT_ENCODERS))
def test_fp8_text_encoder_keeps_fp8_layers_and_encodes_as_the_upcast_one(encoder, scaled, node_env, tmp_path):
    """ComfyUI's fp8 text encoder files (`t5xxl_fp8_e4m3fn`, `qwen_2.5_vl_7b_fp8_scaled`, ...) kept in fp8 give
    the conditioning of the same file upcast as it loads."""
    from nodes.conditioning import CLIPTextEncode

    family, constant, clip_type = TEXT_ENCODERS[encoder]
    registry.family(family).make_demo_models(node_env.folders.models_dir)
    name = getattr(importlib.import_module(f"diffusion.families.{family}.demo"), constant)
    path = tmp_path / "fp8.safetensors"
    _fp8_file(read_safetensors(node_env.folders.model_dir("text_encoders") / name, "clip_name"), path, scaled)
    encodings, sizes = [], []
    for manager in (ModelManager(torch.device("cpu"), torch.bfloat16), KeepingFp8(torch.device("cpu"), torch.bfloat16)):
        clip = loading.load_text_encoders(manager, clip_type, {"clip_name": path})
        encodings.append(CLIPTextEncode().encode(clip, "a photo of a cat")[0][0][0])
        layers = [layer for module in modules_of(clip) for layer in module.modules()
                  if isinstance(layer, QuantizedLinear)]
        assert bool(layers) == isinstance(manager, KeepingFp8)
        assert all(isinstance(layer.weight, Fp8Weight) for layer in layers)
        sizes.append(size_in_bytes(clip))
    assert torch.equal(*encodings)
    assert sizes[1] < 0.9 * sizes[0]  # the tiny models' embeddings (dequantized) weigh more than real ones'



CHECKPOINTS = {"sd": ("sd", "DEMO_CHECKPOINT"), "sdxl": ("sdxl", "DEMO_BASE"), "sd3": ("sd3", "DEMO_CHECKPOINT")}


@pytest.mark.parametrize("family", sorted(CHECKPOINTS))
def test_fp8_checkpoint_kept_in_fp8_gives_the_upcast_checkpoints_image(family, node_env, tmp_path):
    """An all-in-one fp8 checkpoint (CheckpointLoaderSimple) kept in fp8: UNets, transformers and text encoders
    hold their linear layers' fp8 weights and the image is that of the file upcast as it loads."""
    from nodes.conditioning import CLIPTextEncode
    from nodes.flux import EmptySD3LatentImage
    from nodes.latent import EmptyLatentImage, VAEDecode
    from nodes.sampling import KSampler

    package, constant = CHECKPOINTS[family]
    registry.family(family).make_demo_models(node_env.folders.models_dir)
    name = getattr(importlib.import_module(f"diffusion.families.{package}.demo"), constant).removesuffix(".safetensors")
    _fp8_file(read_safetensors(node_env.folders.model_dir("checkpoints") / f"{name}.safetensors", "ckpt_name"),
              tmp_path / "fp8.safetensors", scaled=False)
    images = []
    for manager in (ModelManager(torch.device("cpu"), torch.float32), KeepingFp8(torch.device("cpu"), torch.float32)):
        model, clip, vae = loading.load_checkpoint(manager, tmp_path / "fp8.safetensors")
        assert any(isinstance(layer, QuantizedLinear) for layer in model.network.modules()) == \
            isinstance(manager, KeepingFp8)
        empty = EmptySD3LatentImage() if family == "sd3" else EmptyLatentImage()
        (latent,) = empty.generate(32, 32, 1)
        positive, negative = CLIPTextEncode().encode(clip, "a cat")[0], CLIPTextEncode().encode(clip, "")[0]
        (samples,) = KSampler().sample(model, 1, 2, 4.0, "euler", "normal", positive, negative, latent)
        images.append(VAEDecode().decode(vae, samples)[0])
    assert torch.equal(*images)
