"""ComfyUI's fp8 files with scales read as the weights they stand for: both of ComfyUI's layouts (`scaled_fp8`
with `scale_weight`, quantization metadata with `weight_scale` and `comfy_quant`), per tensor and per row; other
quantized formats are refused by name; a scaled Qwen2.5-VL file encodes as its full-precision original nearly does."""
import json

import pytest
import torch
from safetensors.torch import save_file

from diffusion.files import dequantized, read_safetensors

FP8 = torch.float8_e4m3fn


def _quantized(weight, per_row=False):
    scale = weight.abs().amax(dim=1 if per_row else None) / 448
    stored = (weight / (scale[:, None] if per_row else scale)).to(FP8)
    return stored, scale


def _marker(fmt):
    return torch.tensor(list(json.dumps({"format": fmt}).encode()), dtype=torch.uint8)


def test_both_layouts_give_weight_times_scale(tmp_path):
    generator = torch.Generator().manual_seed(0)
    weight, other = torch.randn(8, 4, generator=generator), torch.randn(6, 8, generator=generator)
    stored, scale = _quantized(weight)
    stored_rows, row_scales = _quantized(other, per_row=True)
    files = {
        "old.safetensors": {"scaled_fp8": torch.empty(0, dtype=FP8), "a.weight": stored, "a.scale_weight": scale,
                            "a.scale_input": torch.ones(()), "a.bias": torch.ones(8), "b.weight": stored_rows,
                            "b.scale_weight": row_scales},
        "new.safetensors": {"a.weight": stored, "a.weight_scale": scale, "a.comfy_quant": _marker("float8_e4m3fn"),
                            "a.input_scale": torch.ones(()), "a.bias": torch.ones(8), "b.weight": stored_rows,
                            "b.weight_scale": row_scales, "b.comfy_quant": _marker("float8_e4m3fn")},
    }
    for name, state in files.items():
        save_file(state, str(tmp_path / name))
        read = read_safetensors(tmp_path / name, "clip_name", torch.float32)
        assert sorted(read) == ["a.bias", "a.weight", "b.weight"]
        assert torch.equal(read["a.weight"], stored.float() * scale)
        assert torch.equal(read["b.weight"], stored_rows.float() * row_scales[:, None])
        assert (read["a.weight"] - weight).abs().max() < 0.1 * weight.abs().max()
        assert read_safetensors(tmp_path / name, "clip_name")["a.weight"].dtype == torch.bfloat16


def test_files_without_scales_are_untouched_and_other_formats_are_refused(tmp_path):
    plain = {"a.weight": torch.randn(2, 2)}
    assert dequantized(plain) is plain
    state = {"a.weight": torch.zeros(4, 4, dtype=torch.uint8), "a.weight_scale": torch.ones(4, 1),
             "a.comfy_quant": _marker("nvfp4")}
    save_file(state, str(tmp_path / "nvfp4.safetensors"))
    with pytest.raises(ValueError, match="unet_name: nvfp4.safetensors: layer a is quantized as 'nvfp4', which is "
                                         "not supported"):
        read_safetensors(tmp_path / "nvfp4.safetensors", "unet_name")
