"""GGUF transformers: each family's tiny transformer file, written as a GGUF file (2-D weights Q8_0), loads through
the UNETLoader path, its quantized weights held in `QuantizedLinear` layers that compute what the dequantized
weights compute, every value (as merging and saving read them) being the dequantized file's."""
import pytest
import torch
from safetensors.torch import save_file

from diffusion import loading, registry
from diffusion.files import read_safetensors
from diffusion.gguf import read_gguf, write_gguf
from diffusion.manager import ModelManager
from diffusion.merging import effective_state_dict
from diffusion.quantized import QuantizedLinear
from tests.nodes.conftest import dequantized_gguf

TRANSFORMERS = {"flux": ("flux", "DEMO_FLUX_TRANSFORMER"), "flux2": ("flux2", "DEMO_FLUX2_TRANSFORMER"),
                "chroma": ("chroma", "DEMO_CHROMA_TRANSFORMER"),
                "qwenimage": ("qwenimage", "DEMO_QWEN_IMAGE_TRANSFORMER"),
                "qwenimage21": ("qwenimage21", "DEMO_QWEN_IMAGE21_TRANSFORMER"),
                "hidream": ("hidream", "DEMO_HIDREAM_TRANSFORMER"),
                "zimage": ("zimage", "DEMO_ZIMAGE_TRANSFORMER"), "lumina2": ("lumina2", "DEMO_LUMINA2_TRANSFORMER")}


@pytest.mark.parametrize("family", sorted(TRANSFORMERS))
def test_gguf_transformer_keeps_quantized_layers_equal_to_dequantized_ones(family, tmp_path, tiny_models_dir):
    import importlib

    package, constant = TRANSFORMERS[family]
    registry.family(family).make_demo_models(tiny_models_dir)
    name = getattr(importlib.import_module(f"diffusion.families.{package}.demo"), constant)
    state = read_safetensors(tiny_models_dir / "diffusion_models" / name, "unet_name")
    write_gguf(state, tmp_path / "model.gguf", family)
    save_file({key: value.contiguous() for key, value in dequantized_gguf(tmp_path / "model.gguf").items()},
              str(tmp_path / "plain.safetensors"))
    manager = ModelManager(torch.device("cpu"), torch.float32)
    quantized = loading.load_diffusion_model(manager, tmp_path / "model.gguf").network
    plain = loading.load_diffusion_model(manager, tmp_path / "plain.safetensors").network
    layers = {name: module for name, module in quantized.named_modules() if isinstance(module, QuantizedLinear)}
    assert layers and all(module.weight.dtype == torch.uint8 for module in layers.values())
    generator = torch.Generator().manual_seed(0)
    for layer_name, layer in layers.items():
        inputs = torch.randn(3, layer.in_features, generator=generator)
        assert torch.allclose(layer(inputs), plain.get_submodule(layer_name)(inputs), atol=1e-5), layer_name
    plain_state = plain.state_dict()
    values = effective_state_dict(quantized, "transformer", ())  # what merging, saving and LoRA extraction read
    assert values.keys() == plain_state.keys()
    assert all(torch.equal(value, plain_state[key]) for key, value in values.items())



def test_unreadable_gguf_files_are_named(tmp_path):
    write_gguf({"img_in.weight": torch.randn(64, 64), "img_in.bias": torch.zeros(64)}, tmp_path / "model.gguf", "flux")
    data = (tmp_path / "model.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:-100])
    (tmp_path / "text.gguf").write_bytes(b"not a gguf file")
    for name in ("cut.gguf", "text.gguf"):
        with pytest.raises(ValueError, match=f"unet_name: {name} is not a readable GGUF file"):
            read_gguf(tmp_path / name, "unet_name")
