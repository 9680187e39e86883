"""`comfy_extras` modules: ComfyUI's node classes by module, `composite` and the chainner model loader."""
from __future__ import annotations

import pytest
import torch
from comfy import utils as comfy_utils
from comfy_extras import nodes_mask, nodes_upscale_model
from comfy_extras.chainner_models import model_loading

from nodes import latent_ops, mask, upscale
from tests.nodes.test_upscale import compact_state, needs_spandrel


def test_the_modules_give_our_nodes_by_comfyuis_names():
    assert nodes_mask.GrowMask is mask.GrowMask and nodes_mask.MaskComposite is mask.MaskComposite
    assert nodes_mask.LatentCompositeMasked is latent_ops.LatentCompositeMasked
    assert set(nodes_mask.NODE_CLASS_MAPPINGS) >= {"ImageCompositeMasked", "SolidMask", "ThresholdMask"}
    assert nodes_upscale_model.UpscaleModelLoader is upscale.UpscaleModelLoader
    assert nodes_upscale_model.ImageUpscaleWithModel is upscale.ImageUpscaleWithModel


def test_composite_pastes_through_the_mask_in_place():
    destination = torch.zeros(1, 3, 4, 6)
    source = torch.ones(1, 3, 2, 2)
    result = nodes_mask.composite(destination, source, 3, 1, torch.full((1, 2, 2), 0.5), multiplier=1)
    assert result is destination
    expected = torch.zeros(1, 3, 4, 6)
    expected[:, :, 1:3, 3:5] = 0.5
    torch.testing.assert_close(result, expected)


def test_composite_in_latent_units_clips_at_the_edges_and_cycles_the_batch():
    destination = torch.zeros(4, 1, 3, 3)
    source = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 2.0)])
    nodes_mask.composite(destination, source, 16, 8)  # pixels // 8: column 2, row 1; one column is cut off
    assert destination[:, 0, 1:, 2].tolist() == [[1, 1], [2, 2], [1, 1], [2, 2]]
    assert destination[:, :, 0].abs().sum() == 0 and destination[:, :, :, :2].abs().sum() == 0
    left = torch.zeros(1, 1, 2, 2)
    nodes_mask.composite(left, torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), -1, 0, multiplier=1)
    assert left.tolist() == [[[[2.0, 0.0], [4.0, 0.0]]]]  # the column left of the destination is hidden


def test_repeat_to_batch_size_cycles_along_a_dimension():
    tensor = torch.arange(6.0).reshape(1, 2, 3)
    assert comfy_utils.repeat_to_batch_size(tensor, 5, dim=1)[0, :, 0].tolist() == [0, 3, 0, 3, 0]
    assert comfy_utils.repeat_to_batch_size(tensor, 1, dim=1).shape == (1, 1, 3)


def test_reshape_mask_fits_a_mask_to_latents():
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    reshaped = comfy_utils.reshape_mask(mask, (3, 4, 4, 4))
    assert reshaped.shape == (3, 4, 4, 4)
    expected = torch.nn.functional.interpolate(mask[:, None], size=(4, 4), mode="bilinear")
    torch.testing.assert_close(reshaped[:, 2], torch.cat([expected, expected])[:3, 0])  # batch cycled: 0, 1, 0
    with pytest.raises(ValueError, match="only image latents"):
        comfy_utils.reshape_mask(mask, (1, 4, 2, 4, 4))


@needs_spandrel
def test_chainner_load_state_dict_gives_an_upscale_model_the_node_runs(node_env):
    state = compact_state(torch.Generator().manual_seed(5), scale=2)
    model = model_loading.load_state_dict(state)
    image = torch.rand(1, 8, 6, 3, generator=torch.Generator().manual_seed(2))
    (upscaled,) = upscale.ImageUpscaleWithModel().upscale(model, image)
    assert model.scale == 2 and upscaled.shape == (1, 16, 12, 3)
    with torch.no_grad():
        expected = model.descriptor(image.movedim(-1, 1)).movedim(1, -1)
    torch.testing.assert_close(upscaled, expected, rtol=0, atol=1e-5)


def test_comfyuis_other_extras_modules_give_our_classes_by_their_python_names():
    from comfy_extras.nodes_clip_sdxl import CLIPTextEncodeSDXL
    from comfy_extras.nodes_latent import LatentBatch
    from comfy_extras.nodes_model_advanced import ModelSamplingAuraFlow, ModelSamplingFlux

    import nodes

    assert LatentBatch is nodes.NODE_CLASS_MAPPINGS["LatentBatch"]
    assert CLIPTextEncodeSDXL is nodes.NODE_CLASS_MAPPINGS["CLIPTextEncodeSDXL"]
    assert ModelSamplingFlux is nodes.NODE_CLASS_MAPPINGS["ModelSamplingFlux"]
    assert ModelSamplingAuraFlow is nodes.NODE_CLASS_MAPPINGS["ModelSamplingAuraFlow"]
    import comfy_extras.nodes_mask

    assert hasattr(comfy_extras.nodes_mask, "composite")  # a written module is not replaced by a made one
    with pytest.raises(ImportError, match="NotANodeHere"):
        exec("from comfy_extras.nodes_latent import NotANodeHere", {})


def test_nodes_custom_sampler_gives_the_nodes_and_the_noise_classes_packs_build(node_env):
    from comfy_extras.nodes_custom_sampler import (
        BasicGuider,
        BasicScheduler,
        Noise_EmptyNoise,
        Noise_RandomNoise,
        SamplerCustomAdvanced,
    )

    import nodes

    assert SamplerCustomAdvanced is nodes.NODE_CLASS_MAPPINGS["SamplerCustomAdvanced"]
    assert BasicGuider is nodes.NODE_CLASS_MAPPINGS["BasicGuider"]
    assert BasicScheduler is nodes.NODE_CLASS_MAPPINGS["BasicScheduler"]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    (ours,) = nodes.NODE_CLASS_MAPPINGS["RandomNoise"]().get_noise(9)
    torch.testing.assert_close(Noise_RandomNoise(9).generate_noise(latent), ours.generate(latent))
    assert Noise_RandomNoise(9).seed == 9 and Noise_EmptyNoise().generate_noise(latent).abs().sum() == 0
