"""The latent operation nodes against ComfyUI: contracts (`COMFYUI_CONTRACTS`, read off nodes.py,
comfy_extras/nodes_latent.py, nodes_mask.py and nodes_rebatch.py), the values and the batch_index / noise_mask
bookkeeping ComfyUI's nodes give (worked out by hand below), bad input, and API-format workflows through the
engine on the tiny SD1 model, including a batch_index honoured by KSampler."""
import math

import pytest
import torch

import nodes
from nodes import latent_ops as ops
from nodes.latent import MAX_RESOLUTION
from tests.nodes.family_workflows import run_workflow
from tests.nodes.test_mask_ops import contract

PIXELS = ("INT", 0, 0, MAX_RESOLUTION, 8)
TWO = [("samples1", "LATENT"), ("samples2", "LATENT")]

# node: (category, RETURN_TYPES, display name, inputs as in tests/nodes/test_mask_ops.py)
COMFYUI_CONTRACTS: dict[str, tuple[str, tuple, str, list]] = {
    "LatentComposite": ("latent", ("LATENT",), "Latent Composite", [
        ("samples_to", "LATENT"), ("samples_from", "LATENT"), ("x", PIXELS), ("y", PIXELS), ("feather", PIXELS)]),
    "LatentCompositeMasked": ("latent", ("LATENT",), "LatentCompositeMasked", [
        ("destination", "LATENT"), ("source", "LATENT"), ("x", PIXELS), ("y", PIXELS),
        ("resize_source", ("BOOLEAN", False)), ("?mask", "MASK")]),
    "LatentBlend": ("_for_testing", ("LATENT",), "Latent Blend", [*TWO, ("blend_factor", ("FLOAT", 0.5, 0, 1, 0.01))]),
    "LatentAdd": ("latent/advanced", ("LATENT",), "LatentAdd", TWO),
    "LatentSubtract": ("latent/advanced", ("LATENT",), "LatentSubtract", TWO),
    "LatentMultiply": ("latent/advanced", ("LATENT",), "LatentMultiply", [
        ("samples", "LATENT"), ("multiplier", ("FLOAT", 1.0, -10.0, 10.0, 0.01))]),
    "LatentInterpolate": ("latent/advanced", ("LATENT",), "LatentInterpolate", [
        *TWO, ("ratio", ("FLOAT", 1.0, 0.0, 1.0, 0.01))]),
    "LatentBatch": ("latent/batch", ("LATENT",), "LatentBatch", TWO),
    "LatentFromBatch": ("latent/batch", ("LATENT",), "Latent From Batch", [
        ("samples", "LATENT"), ("batch_index", ("INT", 0, 0, 63, None)), ("length", ("INT", 1, 1, 64, None))]),
    "RepeatLatentBatch": ("latent/batch", ("LATENT",), "Repeat Latent Batch", [
        ("samples", "LATENT"), ("amount", ("INT", 1, 1, 64, None))]),
    "LatentBatchSeedBehavior": ("latent/advanced", ("LATENT",), "LatentBatchSeedBehavior", [
        ("samples", "LATENT"), ("seed_behavior", ["random", "fixed"])]),
    "RebatchLatents": ("latent/batch", ("LATENT",), "Rebatch Latents", [
        ("latents", "LATENT"), ("batch_size", ("INT", 1, 1, 4096, None))]),
    "LatentCrop": ("latent/transform", ("LATENT",), "Crop Latent", [
        ("samples", "LATENT"), ("width", ("INT", 512, 64, MAX_RESOLUTION, 8)),
        ("height", ("INT", 512, 64, MAX_RESOLUTION, 8)), ("x", PIXELS), ("y", PIXELS)]),
    "LatentFlip": ("latent/transform", ("LATENT",), "Flip Latent", [
        ("samples", "LATENT"), ("flip_method", ["x-axis: vertically", "y-axis: horizontally"])]),
    "LatentRotate": ("latent/transform", ("LATENT",), "Rotate Latent", [
        ("samples", "LATENT"), ("rotation", ["none", "90 degrees", "180 degrees", "270 degrees"])]),
}


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    category, return_types, display_name, inputs = COMFYUI_CONTRACTS[name]
    assert contract(node_class) == (category, return_types, inputs)
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == display_name
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))


def test_every_latent_op_is_in_the_table_and_list_flags_match():
    assert set(ops.NODE_CLASS_MAPPINGS) == set(COMFYUI_CONTRACTS)
    assert ops.RebatchLatents.INPUT_IS_LIST is True and ops.RebatchLatents.OUTPUT_IS_LIST == (True,)
    assert ops.LatentBatchSeedBehavior.INPUT_TYPES()["required"]["seed_behavior"][1]["default"] == "fixed"


def _latent(samples, **extra):
    return {"samples": samples, **extra}


# -- compositing ----------------------------------------------------------------------------------------------------


def test_latent_composite_pastes_on_the_8_pixel_grid():
    mask = torch.ones(1, 1, 32, 32)
    destination = _latent(torch.zeros(2, 4, 4, 4), noise_mask=mask, batch_index=[3, 4])
    (out,) = ops.LatentComposite().composite(destination, _latent(torch.ones(1, 4, 2, 2)), x=15, y=16)
    expected = torch.zeros(2, 4, 4, 4)
    expected[:, :, 2:4, 1:3] = 1  # x=15 -> column 1, y=16 -> row 2
    assert torch.equal(out["samples"], expected)
    assert out["noise_mask"] is mask and out["batch_index"] == [3, 4]
    assert torch.equal(destination["samples"], torch.zeros(2, 4, 4, 4))
    (clipped,) = ops.LatentComposite().composite(_latent(torch.zeros(1, 1, 4, 4)), _latent(torch.ones(1, 1, 3, 3)),
                                                 x=16, y=24)
    assert clipped["samples"].sum() == 2 and torch.equal(clipped["samples"][0, 0, 3, 2:], torch.ones(2))
    (outside,) = ops.LatentComposite().composite(_latent(torch.zeros(1, 1, 4, 4)), _latent(torch.ones(1, 1, 3, 3)),
                                                 x=64, y=0)
    assert outside["samples"].sum() == 0


def test_latent_composite_feathers_only_the_inner_edges():
    # a 4x4 block of ones into 8x8 zeros at (0, 16) with feather 16 (2 latent pixels): the left edge lies on the
    # destination's border and is not faded; top, bottom and right fade by 1/2, 2/2 (ComfyUI's (t + 1) / feather)
    (out,) = ops.LatentComposite().composite(_latent(torch.zeros(1, 1, 8, 8)), _latent(torch.ones(1, 1, 4, 4)),
                                             x=0, y=16, feather=16)
    rows = torch.tensor([0.5, 1.0, 1.0, 0.5])
    columns = torch.tensor([1.0, 1.0, 1.0, 0.5])
    expected = torch.zeros(1, 1, 8, 8)
    expected[0, 0, 2:6, 0:4] = rows[:, None] * columns[None, :]
    assert torch.allclose(out["samples"], expected)
    # the destination shows through: out = from * w + to * (1 - w)
    (over_ones,) = ops.LatentComposite().composite(_latent(torch.ones(1, 1, 8, 8)), _latent(torch.zeros(1, 1, 4, 4)),
                                                   x=0, y=16, feather=16)
    assert torch.allclose(over_ones["samples"][0, 0, 2:6, 0:4], 1 - expected[0, 0, 2:6, 0:4])


def test_latent_composite_bad_input():
    with pytest.raises(ValueError, match="^samples_from: latents with 16 channels"):
        ops.LatentComposite().composite(_latent(torch.zeros(1, 4, 4, 4)), _latent(torch.zeros(1, 16, 2, 2)), 0, 0)
    with pytest.raises(ValueError, match="^samples_from: a batch of 2 cannot be pasted into a batch of 3"):
        ops.LatentComposite().composite(_latent(torch.zeros(3, 4, 4, 4)), _latent(torch.zeros(2, 4, 2, 2)), 0, 0)
    with pytest.raises(ValueError, match="^samples_to: expected a LATENT"):
        ops.LatentComposite().composite({"samples": torch.zeros(4, 4)}, _latent(torch.zeros(1, 4, 2, 2)), 0, 0)


def test_latent_composite_masked():
    destination = _latent(torch.zeros(4, 1, 4, 4), batch_index=[0, 1, 2, 3])
    source = _latent(torch.arange(1, 3, dtype=torch.float32).reshape(2, 1, 1, 1).expand(2, 1, 2, 2))
    (out,) = ops.LatentCompositeMasked().composite(destination, source, x=8, y=8, resize_source=False,
                                                   mask=torch.full((1, 2, 2), 0.25))
    # the source batch of 2 is cycled to 4 rows (1, 2, 1, 2) and pasted at latent (1, 1) with weight 0.25
    assert out["batch_index"] == [0, 1, 2, 3]
    assert torch.allclose(out["samples"][:, 0, 1:3, 1:3], torch.tensor([0.25, 0.5, 0.25, 0.5]).view(4, 1, 1))
    assert out["samples"][:, :, 0].sum() == 0 and out["samples"][:, :, 3].sum() == 0
    (whole,) = ops.LatentCompositeMasked().composite(_latent(torch.zeros(1, 1, 4, 4)), _latent(torch.ones(1, 1, 2, 2)),
                                                     x=0, y=0, resize_source=True)
    assert torch.equal(whole["samples"], torch.ones(1, 1, 4, 4))  # no mask: the resized source replaces everything
    # a pixel-size mask (16x16 for a 2x2 latent) is resized to the source: left half 1, right half 0
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1
    (halves,) = ops.LatentCompositeMasked().composite(_latent(torch.zeros(1, 1, 2, 2)), _latent(torch.ones(1, 1, 2, 2)),
                                                      x=0, y=0, resize_source=False, mask=mask)
    assert torch.equal(halves["samples"][0, 0], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_latent_blend():
    first, second = torch.full((1, 4, 2, 2), 2.0), torch.full((1, 4, 2, 2), 10.0)
    (out,) = ops.LatentBlend().blend(_latent(first, batch_index=[7]), _latent(second), 0.25)
    assert torch.allclose(out["samples"], torch.full((1, 4, 2, 2), 8.0)) and out["batch_index"] == [7]
    (resized,) = ops.LatentBlend().blend(_latent(first), _latent(torch.full((1, 4, 4, 6), 10.0)), 0.5)
    assert resized["samples"].shape == (1, 4, 2, 2) and torch.allclose(resized["samples"], torch.full_like(first, 6))
    with pytest.raises(ValueError, match="^samples2: a batch of 2 cannot be blended with a batch of 3"):
        ops.LatentBlend().blend(_latent(torch.zeros(3, 4, 2, 2)), _latent(torch.zeros(2, 4, 2, 2)), 0.5)


# -- arithmetic ------------------------------------------------------------------------------------------------------


def test_latent_add_subtract_multiply():
    first = torch.arange(8, dtype=torch.float32).reshape(2, 1, 2, 2)
    (added,) = ops.LatentAdd().op(_latent(first, noise_mask=torch.ones(1, 1, 16, 16)), _latent(torch.ones(1, 1, 4, 4)))
    # samples2 is resized to 2x2 (a constant stays constant) and its batch of 1 cycled to 2
    assert torch.equal(added["samples"], first + 1) and "noise_mask" in added
    (subtracted,) = ops.LatentSubtract().op(_latent(first), _latent(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
                                                                   .expand(2, 1, 2, 2)))
    assert torch.equal(subtracted["samples"][:, 0, 0, 0], torch.tensor([-1.0, 2.0]))
    (scaled,) = ops.LatentMultiply().op(_latent(first), -0.5)
    assert torch.equal(scaled["samples"], first * -0.5)
    # batch 2 with 3: cycled to 3 rows... then cut to the first latents' batch of 2 (ComfyUI's repeat_to_batch_size)
    (cycled,) = ops.LatentAdd().op(_latent(torch.zeros(3, 1, 1, 1)), _latent(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)))
    assert cycled["samples"].flatten().tolist() == [1.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="^samples2: latents with 16 channels cannot be combined"):
        ops.LatentAdd().op(_latent(torch.zeros(1, 4, 2, 2)), _latent(torch.zeros(1, 16, 2, 2)))


def test_latent_interpolate_mixes_directions_and_lengths():
    first = torch.zeros(1, 4, 1, 2)
    second = torch.zeros(1, 4, 1, 2)
    first[0, :, 0, 0] = torch.tensor([3.0, 4.0, 0.0, 0.0])   # length 5, direction (0.6, 0.8, 0, 0)
    second[0, :, 0, 0] = torch.tensor([0.0, 0.0, 0.0, 2.0])  # length 2, direction (0, 0, 0, 1)
    (out,) = ops.LatentInterpolate().op(_latent(first), _latent(second), 0.5)
    # mixed direction (0.3, 0.4, 0, 0.5) has length sqrt(0.5); the mixed length is 3.5
    expected = torch.tensor([0.3, 0.4, 0.0, 0.5]) / math.sqrt(0.5) * 3.5
    assert torch.allclose(out["samples"][0, :, 0, 0], expected)
    assert torch.equal(out["samples"][0, :, 0, 1], torch.zeros(4))  # zero vectors stay zero (no NaN)
    (ends,) = ops.LatentInterpolate().op(_latent(first), _latent(second), 1.0)
    assert torch.allclose(ends["samples"], first)
    # a batch: each row is interpolated with its own lengths, as a batch of 1 would be
    (pair,) = ops.LatentInterpolate().op(_latent(torch.cat([first, second])), _latent(torch.cat([second, first])), 0.5)
    assert torch.allclose(pair["samples"][0], out["samples"][0])
    assert torch.allclose(pair["samples"][1], out["samples"][0])  # ratio 0.5 is symmetric


# -- batches ---------------------------------------------------------------------------------------------------------


def _rows(count: int, height: int = 1, width: int = 1) -> torch.Tensor:
    """A batch whose row k is filled with k."""
    return torch.arange(count, dtype=torch.float32).view(count, 1, 1, 1).expand(count, 1, height, width).clone()


def test_latent_batch_joins_rows_and_batch_indices():
    (joined,) = ops.LatentBatch().batch(_latent(_rows(2)), _latent(_rows(1) + 5, batch_index=[5]))
    assert joined["samples"].flatten().tolist() == [0.0, 1.0, 5.0] and joined["batch_index"] == [0, 1, 5]
    mask = torch.ones(1, 1, 8, 8)
    (resized,) = ops.LatentBatch().batch(_latent(_rows(1, 2, 2), noise_mask=mask, batch_index=[4]),
                                         _latent(torch.ones(2, 1, 4, 4)))
    assert resized["samples"].shape == (3, 1, 2, 2) and resized["batch_index"] == [4, 0, 1]
    assert resized["noise_mask"] is mask  # samples1's mask is kept as it is, as in ComfyUI


def test_latent_from_batch():
    latent = _latent(_rows(4), noise_mask=torch.arange(2, dtype=torch.float32).view(2, 1, 1, 1))
    (picked,) = ops.LatentFromBatch().frombatch(latent, 1, 2)
    assert picked["samples"].flatten().tolist() == [1.0, 2.0] and picked["batch_index"] == [1, 2]
    # a mask batch of 2 for 4 rows is repeated (0, 1, 0, 1) before picking
    assert picked["noise_mask"].flatten().tolist() == [1.0, 0.0]
    (clamped,) = ops.LatentFromBatch().frombatch(_latent(_rows(4), batch_index=[10, 11, 12, 13]), 10, 5)
    assert clamped["samples"].flatten().tolist() == [3.0] and clamped["batch_index"] == [13]
    single_mask = torch.ones(1, 1, 8, 8)
    (kept,) = ops.LatentFromBatch().frombatch(_latent(_rows(3), noise_mask=single_mask), 0, 64)
    assert kept["batch_index"] == [0, 1, 2] and torch.equal(kept["noise_mask"], single_mask)


def test_repeat_latent_batch():
    latent = _latent(_rows(2), batch_index=[2, 3], noise_mask=torch.tensor([0.0, 1.0]).view(2, 1, 1, 1))
    (repeated,) = ops.RepeatLatentBatch().repeat(latent, 3)
    assert repeated["samples"].flatten().tolist() == [0.0, 1.0] * 3
    assert repeated["batch_index"] == [2, 3, 4, 5, 6, 7]  # continued past the original range
    assert repeated["noise_mask"].flatten().tolist() == [0.0, 1.0] * 3
    (plain,) = ops.RepeatLatentBatch().repeat(_latent(_rows(1), noise_mask=torch.ones(1, 1, 8, 8)), 2)
    assert "batch_index" not in plain and plain["noise_mask"].shape[0] == 1
    (sparse,) = ops.RepeatLatentBatch().repeat(_latent(_rows(2), batch_index=[1, 4]), 2)
    assert sparse["batch_index"] == [1, 4, 5, 8]  # offset = max - min + 1 = 4


def test_latent_batch_seed_behavior():
    (fixed,) = ops.LatentBatchSeedBehavior().op(_latent(_rows(3), batch_index=[3, 4, 5]), "fixed")
    assert fixed["batch_index"] == [3, 3, 3]
    (fixed_plain,) = ops.LatentBatchSeedBehavior().op(_latent(_rows(2)), "fixed")
    assert fixed_plain["batch_index"] == [0, 0]
    latent = _latent(_rows(2), batch_index=[0, 0])
    (random,) = ops.LatentBatchSeedBehavior().op(latent, "random")
    assert "batch_index" not in random and latent["batch_index"] == [0, 0]


def test_rebatch_latents():
    mask = torch.zeros(2, 1, 8, 8)
    first = _latent(_rows(3))
    second = _latent(_rows(2) + 10, noise_mask=mask)
    other_size = _latent(torch.full((1, 1, 2, 2), 20.0))
    (batches,) = ops.RebatchLatents().rebatch([first, second, other_size], [2])
    assert [batch["samples"].flatten().tolist()[::batch["samples"][0].numel()] for batch in batches] == \
        [[0.0, 1.0], [2.0, 10.0], [11.0], [20.0]]
    assert [batch["batch_index"] for batch in batches] == [[0, 1], [2, 3], [4], [5]]
    assert "noise_mask" not in batches[0] and "noise_mask" not in batches[3]  # all-ones masks are dropped
    assert batches[1]["noise_mask"][:, 0, 0, 0].tolist() == [1.0, 0.0] and batches[2]["noise_mask"].sum() == 0
    (whole,) = ops.RebatchLatents().rebatch([_latent(_rows(3), batch_index=[7, 8, 9])], [4096])
    assert len(whole) == 1 and whole[0]["batch_index"] == [7, 8, 9]


# -- transforms ------------------------------------------------------------------------------------------------------


def test_latent_crop():
    grid = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16)
    (cropped,) = ops.LatentCrop().crop(_latent(grid), width=64, height=72, x=8, y=17)
    assert torch.equal(cropped["samples"], grid[:, :, 2:11, 1:9])
    (clamped,) = ops.LatentCrop().crop(_latent(grid), width=512, height=64, x=200, y=0)
    assert torch.equal(clamped["samples"], grid[:, :, 0:8, 8:16])  # x kept 8 latent pixels from the right edge


def test_latent_flip_and_rotate():
    square = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    mask = torch.ones(1, 1, 16, 16)

    def flipped(method):
        return ops.LatentFlip().flip(_latent(square, noise_mask=mask), method)[0]

    assert flipped("x-axis: vertically")["samples"][0, 0].tolist() == [[3.0, 4.0], [1.0, 2.0]]
    assert flipped("y-axis: horizontally")["samples"][0, 0].tolist() == [[2.0, 1.0], [4.0, 3.0]]
    assert flipped("x-axis: vertically")["noise_mask"] is mask

    def rotated(rotation):
        return ops.LatentRotate().rotate(_latent(square), rotation)[0]["samples"][0, 0].tolist()

    assert rotated("none") == [[1.0, 2.0], [3.0, 4.0]]
    assert rotated("90 degrees") == [[3.0, 1.0], [4.0, 2.0]]  # clockwise
    assert rotated("180 degrees") == [[4.0, 3.0], [2.0, 1.0]]
    assert rotated("270 degrees") == [[2.0, 4.0], [1.0, 3.0]]
    wide = torch.zeros(1, 4, 2, 3)
    assert ops.LatentRotate().rotate(_latent(wide), "90 degrees")[0]["samples"].shape == (1, 4, 3, 2)


# -- through the engine, on the tiny SD1 model ----------------------------------------------------------------------


def _sd1_graph(latent_nodes: dict, latent_link: list, batch_size: int) -> dict:
    from diffusion.families.sd.demo import DEMO_CHECKPOINT

    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a cat"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch_size}},
        **latent_nodes,
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": latent_link,
            "seed": 7, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "ops"}},
    }


def _pixels(images) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images]))


def test_rows_taken_from_a_batch_keep_their_noise(node_env):
    whole = _pixels(run_workflow(node_env, _sd1_graph({}, ["4", 0], 4)))
    picked_nodes = {"10": {"class_type": "LatentFromBatch", "inputs": {"samples": ["4", 0], "batch_index": 1,
                                                                       "length": 2}}}
    picked = _pixels(run_workflow(node_env, _sd1_graph(picked_nodes, ["10", 0], 4)))
    assert picked.shape[0] == 2
    assert (picked - whole[1:3]).abs().max() <= 1  # the same images (8-bit rounding of float noise aside)
    redrawn_nodes = {**picked_nodes, "11": {"class_type": "LatentBatchSeedBehavior",
                                            "inputs": {"samples": ["10", 0], "seed_behavior": "random"}}}
    redrawn = _pixels(run_workflow(node_env, _sd1_graph(redrawn_nodes, ["11", 0], 4)))
    assert (redrawn - whole[0:2]).abs().max() <= 1 and (redrawn - picked).abs().max() > 10  # draws 0, 1 again
    fixed_nodes = {"10": {"class_type": "LatentBatchSeedBehavior", "inputs": {"samples": ["4", 0],
                                                                              "seed_behavior": "fixed"}}}
    fixed = _pixels(run_workflow(node_env, _sd1_graph(fixed_nodes, ["10", 0], 2)))
    assert (fixed[1] - fixed[0]).abs().max() <= 1 and (fixed[0] - whole[0]).abs().max() <= 1


def test_latent_ops_workflow_runs_through_the_engine(node_env):
    latent_nodes = {
        "10": {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["4", 0], "amount": 2}},
        "11": {"class_type": "LatentMultiply", "inputs": {"samples": ["10", 0], "multiplier": 0.5}},
        "12": {"class_type": "LatentComposite", "inputs": {"samples_to": ["10", 0], "samples_from": ["11", 0],
                                                           "x": 16, "y": 16, "feather": 8}},
        "13": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 32, "height": 32}},
        "14": {"class_type": "LatentCompositeMasked", "inputs": {
            "destination": ["12", 0], "source": ["11", 0], "x": 0, "y": 0, "resize_source": True, "mask": ["13", 0]}},
        "15": {"class_type": "LatentFlip", "inputs": {"samples": ["14", 0], "flip_method": "y-axis: horizontally"}},
        "16": {"class_type": "LatentRotate", "inputs": {"samples": ["15", 0], "rotation": "180 degrees"}},
        "17": {"class_type": "LatentBatch", "inputs": {"samples1": ["16", 0], "samples2": ["4", 0]}},
        "18": {"class_type": "LatentInterpolate", "inputs": {"samples1": ["17", 0], "samples2": ["17", 0],
                                                             "ratio": 0.5}},
        "19": {"class_type": "LatentAdd", "inputs": {"samples1": ["18", 0], "samples2": ["4", 0]}},
        "20": {"class_type": "LatentSubtract", "inputs": {"samples1": ["19", 0], "samples2": ["4", 0]}},
        "21": {"class_type": "LatentBlend", "inputs": {"samples1": ["20", 0], "samples2": ["17", 0],
                                                       "blend_factor": 0.5}},
        "22": {"class_type": "LatentCrop", "inputs": {"samples": ["21", 0], "width": 64, "height": 64, "x": 0,
                                                      "y": 0}},
        "23": {"class_type": "RebatchLatents", "inputs": {"latents": ["22", 0], "batch_size": 2}},
    }
    images = run_workflow(node_env, _sd1_graph(latent_nodes, ["23", 0], 1))
    # 1 row repeated to 2, joined with the original: 3 rows, rebatched into batches of 2 and 1, each sampled
    assert len(images) == 3 and all(image.size == (64, 64) for image in images)
