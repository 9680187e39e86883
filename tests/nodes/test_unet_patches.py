"""The UNet patch nodes FreeU, FreeU_V2, PatchModelAddDownscale, HyperTile, TomePatchModel, Epsilon Scaling and
DifferentialDiffusion:

- their contracts against ComfyUI's (`COMFYUI_CONTRACTS`, read off comfy_extras/nodes_freelunch.py,
  nodes_model_downscale.py, nodes_hypertile.py, nodes_tomesd.py, nodes_eps.py, nodes_differential_diffusion.py);
- the maths on small hand-computed tensors: FreeU's Fourier filter and backbone scaling (both versions), deep
  shrink's resizes and bislerp, HyperTile's tile choice and its tiled attention (queries tiled, keys and values
  split into consecutive chunks, as ComfyUI's batch reshape does), ToMe's bipartite merge, Epsilon Scaling and
  Differential Diffusion's per-step mask;
- the hooks on a diffusers UNet: a FreeU placed as diffusers' enable_freeu places it gives diffusers' own result;
  the network's hooks and processors as they were after a run, also after one that failed;
- KSampler end to end on the tiny SD1 and SD2 with each patch: the result changes, and with neutral settings it
  does not; refusals naming the input; API-format workflows through validation and execution.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest
import torch

import nodes
from diffusion.sampling import unet_patches as up
from diffusion.sampling.ksampler import ksample
from diffusion.sampling.model_sampling import DiscreteModelSampling
from nodes import unet_patches as nodes_up
from nodes.conditioning import CLIPTextEncode
from nodes.inpaint import SetLatentNoiseMask
from nodes.latent import EmptyLatentImage
from nodes.loaders import CheckpointLoaderSimple
from nodes.sampling import KSampler
from tests.nodes.family_workflows import run_workflow

UNET = "model_patches/unet"
FREEU_FACTOR = (0.0, 10.0, 0.01)
METHODS = ["bicubic", "nearest-exact", "bilinear", "area", "bislerp"]

# node: (category, display name, experimental, required inputs in order, optional inputs): a widget is (type,
# default, min, max, step) or (BOOLEAN, default) or a list of choices; a link is its type
COMFYUI_CONTRACTS: dict[str, tuple] = {
    "FreeU": (UNET, "FreeU", False, [
        ("model", "MODEL"), ("b1", ("FLOAT", 1.1, *FREEU_FACTOR)), ("b2", ("FLOAT", 1.2, *FREEU_FACTOR)),
        ("s1", ("FLOAT", 0.9, *FREEU_FACTOR)), ("s2", ("FLOAT", 0.2, *FREEU_FACTOR))], []),
    "FreeU_V2": (UNET, "FreeU_V2", False, [
        ("model", "MODEL"), ("b1", ("FLOAT", 1.3, *FREEU_FACTOR)), ("b2", ("FLOAT", 1.4, *FREEU_FACTOR)),
        ("s1", ("FLOAT", 0.9, *FREEU_FACTOR)), ("s2", ("FLOAT", 0.2, *FREEU_FACTOR))], []),
    "PatchModelAddDownscale": (UNET, "PatchModelAddDownscale (Kohya Deep Shrink)", False, [
        ("model", "MODEL"), ("block_number", ("INT", 3, 1, 32, 1)),
        ("downscale_factor", ("FLOAT", 2.0, 0.1, 9.0, 0.001)), ("start_percent", ("FLOAT", 0.0, 0.0, 1.0, 0.001)),
        ("end_percent", ("FLOAT", 0.35, 0.0, 1.0, 0.001)), ("downscale_after_skip", ("BOOLEAN", True)),
        ("downscale_method", METHODS), ("upscale_method", METHODS)], []),
    "HyperTile": (UNET, "HyperTile", False, [
        ("model", "MODEL"), ("tile_size", ("INT", 256, 1, 2048, 1)), ("swap_size", ("INT", 2, 1, 128, 1)),
        ("max_depth", ("INT", 0, 0, 10, 1)), ("scale_depth", ("BOOLEAN", False))], []),
    "TomePatchModel": (UNET, "TomePatchModel", False, [
        ("model", "MODEL"), ("ratio", ("FLOAT", 0.3, 0.0, 1.0, 0.01))], []),
    "Epsilon Scaling": (UNET, "Epsilon Scaling", False, [
        ("model", "MODEL"), ("scaling_factor", ("FLOAT", 1.005, 0.5, 1.5, 0.001))], []),
    "DifferentialDiffusion": ("_for_testing", "Differential Diffusion", True, [("model", "MODEL")], [
        ("strength", ("FLOAT", 1.0, 0.0, 1.0, 0.01))]),
}


def _inputs(section: dict) -> list:
    described = []
    for name, (kind, *rest) in section.items():
        options = rest[0] if rest else {}
        if isinstance(kind, list):
            described.append((name, kind))
        elif kind in ("FLOAT", "INT"):
            described.append((name, (kind, options["default"], options["min"], options["max"], options["step"])))
        elif kind == "BOOLEAN":
            described.append((name, (kind, options["default"])))
        else:
            described.append((name, kind))
    return described


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_contract_matches_comfyui(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    spec = node_class.INPUT_TYPES()
    contract = (node_class.CATEGORY, nodes.NODE_DISPLAY_NAME_MAPPINGS[name], getattr(node_class, "EXPERIMENTAL", False),
                _inputs(spec["required"]), _inputs(spec.get("optional", {})))
    assert contract == COMFYUI_CONTRACTS[name]
    assert node_class.RETURN_TYPES == ("MODEL",) and getattr(node_class, "RETURN_NAMES", None) is None


# --- maths --------------------------------------------------------------------------------------------------


def test_fourier_filter_scales_the_lowest_frequencies_only():
    constant = torch.ones(1, 1, 4, 4)  # all of it at frequency 0, the centre of the shifted spectrum
    assert torch.allclose(up.fourier_filtered(constant, 1, 0.5), constant * 0.5)
    checkerboard = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 * 2.0 - 1  # the highest frequency
    checkerboard = checkerboard.reshape(1, 1, 4, 4)
    assert torch.allclose(up.fourier_filtered(checkerboard, 1, 0.5), checkerboard, atol=1e-6)
    assert torch.allclose(up.fourier_filtered(constant + checkerboard, 1, 0.2), 0.2 + checkerboard, atol=1e-6)
    # threshold 1 takes the centre 2x2 frequencies: on a 2-wide row, both
    assert torch.allclose(up.fourier_filtered(torch.tensor([[[[1.0, 3.0]]]]), 1, 0.5),
                          torch.tensor([[[[0.5, 1.5]]]]))
    assert up.fourier_filtered(constant.half(), 1, 0.5).dtype == torch.float16


def test_freeu_scales_by_channel_count():
    run = up.PatchRun(0)
    h, hsp = torch.ones(1, 8, 2, 2), torch.ones(1, 3, 2, 2)
    v1 = up.FreeU(2, b1=1.5, b2=3.0, s1=0.5, s2=0.25, version=1)
    scaled, filtered = v1.output_block(h.clone(), hsp, 0, run)  # 8 channels: 4x the base, b1 and s1
    assert torch.allclose(scaled, torch.cat([torch.full((1, 4, 2, 2), 1.5), torch.ones(1, 4, 2, 2)], 1))
    assert torch.allclose(filtered, hsp * 0.5)  # a constant skip is all low frequency
    scaled, filtered = v1.output_block(torch.ones(1, 4, 2, 2), hsp, 0, run)  # 2x the base: b2 and s2
    assert torch.allclose(scaled[:, :2], torch.full((1, 2, 2, 2), 3.0)) and torch.allclose(filtered, hsp * 0.25)
    other = torch.ones(1, 6, 2, 2)
    assert v1.output_block(other, hsp, 0, run)[0] is other  # no scale for other widths
    # version 2: 1 + (b - 1) times the channel mean, min-max normalized per row
    h = torch.tensor([[[[0.0, 2.0]], [[2.0, 4.0]]]])  # channel means 1 and 3 -> 0 and 1
    v2 = up.FreeU(1, b1=9.0, b2=3.0, s1=1.0, s2=0.5, version=2)
    scaled, filtered = v2.output_block(h, torch.tensor([[[[1.0, 3.0]]]]), 0, run)
    assert torch.allclose(scaled, torch.tensor([[[[0.0, 6.0]], [[2.0, 4.0]]]]))
    assert torch.allclose(filtered, torch.tensor([[[[0.5, 1.5]]]]))
    # a 1x1 hidden state (no spread to normalize by) gets the full factor, not ComfyUI's NaN
    assert torch.equal(v2.output_block(torch.ones(1, 2, 1, 1), torch.ones(1, 1, 1, 1), 0, run)[0],
                       torch.tensor([3.0, 1.0]).reshape(1, 2, 1, 1))


def test_deep_shrink_resizes_inside_its_sigma_span():
    h = torch.arange(16.0).reshape(1, 1, 4, 4)
    block_means = torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]])
    after_skip = up.DeepShrink(3, 2.0, sigma_start=10.0, sigma_end=1.0, shrink_after_skip=True,
                               downscale_method="area", upscale_method="nearest-exact")
    run = up.PatchRun(0, sigma=5.0)
    assert after_skip.input_block(h, 3, run) is h
    assert torch.equal(after_skip.after_skip(h, 3, run), block_means)
    assert after_skip.after_skip(h, 2, run) is h
    for outside in (0.5, 10.5):
        assert after_skip.after_skip(h, 3, up.PatchRun(0, sigma=outside)) is h
    before_skip = dataclasses.replace(after_skip, shrink_after_skip=False)
    assert torch.equal(before_skip.input_block(h, 3, run), block_means)
    assert before_skip.after_skip(h, 3, run) is h
    upscaled, skip = after_skip.output_block(block_means, h, 8, run)
    assert skip is h and torch.equal(upscaled, block_means.repeat_interleave(2, 2).repeat_interleave(2, 3))
    same = torch.ones(1, 2, 4, 4)
    assert after_skip.output_block(same, h, 8, run)[0] is same
    # factors round each side: 5 / 1.5 -> 3
    assert up.DeepShrink(3, 1.5, 10.0, 1.0, True, "bilinear", "bilinear").after_skip(
        torch.ones(1, 1, 5, 5), 3, run).shape == (1, 1, 3, 3)


def test_slerp_and_bislerp():
    low, high = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    half = up._slerp(low, high, torch.tensor([[0.5]]))
    assert torch.allclose(half, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]]) * 1.5)  # norm 1 -> 2 halfway
    same = up._slerp(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 2.0]]), torch.tensor([[0.5]]))
    assert torch.allclose(same, torch.tensor([[1.0, 1.0]]))  # the same direction: the first, as ComfyUI has it
    opposite = up._slerp(torch.tensor([[1.0, 0.0]]), torch.tensor([[-3.0, 0.0]]), torch.tensor([[0.25]]))
    assert torch.allclose(opposite, torch.tensor([[0.0, 0.0]]))  # opposite: linear
    constant = torch.tensor([1.0, -2.0, 0.5]).reshape(1, 3, 1, 1).expand(2, 3, 3, 5)
    assert torch.allclose(up.bislerp(constant, 7, 4), constant[:, :, :1, :1].expand(2, 3, 4, 7))
    first, second, ratio = up._bilinear_sources(4, 2, torch.device("cpu"))  # halving: between 0,1 and 2,3
    assert first.tolist() == [0, 2] and second.tolist() == [1, 3] and torch.allclose(ratio, torch.tensor([0.5, 0.5]))
    assert torch.allclose(up.resized(torch.ones(1, 2, 2, 2), 3, 3, "bislerp"), torch.ones(1, 2, 3, 3))


def test_hypertile_draws_as_comfyui():
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert up.random_divisor(8, 32, 2, generator) == 1  # no divisor of 8 above 32: 8 itself, one tile, no draw
    assert torch.equal(generator.get_state(), state)
    assert up.random_divisor(64, 32, 2, generator) == 2  # 32 and 64 divide: 2 or 1 tiles, and only 2 is drawn
    assert not torch.equal(generator.get_state(), state)
    drawn = {up.random_divisor(64, 8, 3, generator) for _ in range(50)}  # 8, 4 or 2 tiles: never the last
    assert drawn == {8, 4}


def test_tiles_in_raster_order():
    tokens = torch.arange(16.0).reshape(1, 16, 1)
    tiles = up._tiled(tokens, 4, 4, 2, 2)
    assert tiles[..., 0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert torch.equal(up._untiled(tiles, 4, 4, 2, 2), tokens)


def _attention_layer() -> torch.nn.Module:
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    return Attention(query_dim=8, heads=2, dim_head=4).eval()


def _attend(attention: torch.nn.Module, q_in: torch.Tensor, kv_in: torch.Tensor) -> torch.Tensor:
    """Softmax attention of the two heads, by hand; [tokens, 8] in and out (before the output projection)."""
    q, k, v = attention.to_q(q_in), attention.to_k(kv_in), attention.to_v(kv_in)
    heads = []
    for head in range(2):
        part = slice(head * 4, head * 4 + 4)
        weights = torch.softmax(q[:, part] @ k[:, part].T / 2.0, dim=-1)
        heads.append(weights @ v[:, part])
    return torch.cat(heads, dim=-1)


def test_hypertile_attention_tiles_queries_and_chunks_keys():
    attention = _attention_layer()
    hidden = torch.randn(1, 64, 8, generator=torch.Generator().manual_seed(1))  # 8x8 tokens
    run = up.PatchRun(0, cpu_generator=torch.Generator().manual_seed(0), input_shape=(1, 4, 8, 8))
    # tile_size 32: tiles of at least 4 tokens a side, so 2 x 2 tiles of 4 x 4
    processor = up.PatchedAttention([up.HyperTile(32, 2, 0, False)], run)
    with torch.no_grad():
        out = processor(attention, hidden)
        grid = hidden[0].reshape(8, 8, 8)
        expected = torch.zeros(8, 8, 8)
        for index, (rows, columns) in enumerate([(slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 8)),
                                                 (slice(4, 8), slice(0, 4)), (slice(4, 8), slice(4, 8))]):
            queries = grid[rows, columns].reshape(16, 8)
            chunk = hidden[0, index * 16:(index + 1) * 16]  # ComfyUI's keys: consecutive tokens, not the tile
            expected[rows, columns] = attention.to_out[0](_attend(attention, queries, chunk)).reshape(4, 4, 8)
        assert torch.allclose(out[0], expected.reshape(64, 8), atol=1e-5)
        # nothing to tile (tiles as large as the grid): plain self-attention
        plain = up.PatchedAttention([up.HyperTile(2048, 2, 0, False)], run)(attention, hidden)
        assert torch.allclose(plain[0], attention.to_out[0](_attend(attention, hidden[0], hidden[0])), atol=1e-5)


def test_bipartite_merge_by_hand():
    corner = int(torch.randint(4, (1, 1), generator=torch.Generator().manual_seed(3)))  # the 2x2 cell's dst
    directions = torch.eye(4)
    metric = directions.clone()
    others = [index for index in range(4) if index != corner]
    metric[others[1]] = metric[corner] * 2 + 0.1 * metric[others[0]]  # the source most like the destination
    merge, unmerge = up.bipartite_merge(metric[None], 2, 2, 1, torch.Generator().manual_seed(3))
    x = torch.arange(4.0).reshape(1, 4, 1) * 10
    merged = merge(x)
    assert merged.shape == (1, 3, 1)
    assert merged[0, -1, 0] == (x[0, corner, 0] + x[0, others[1], 0]) / 2  # averaged into the destination
    assert sorted(merged[0, :2, 0].tolist()) == sorted([x[0, others[0], 0].item(), x[0, others[2], 0].item()])
    restored = unmerge(merged)
    expected = x.clone()
    expected[0, [corner, others[1]]] = merged[0, -1]
    assert torch.equal(restored, expected)
    nothing, _ = up.bipartite_merge(metric[None], 2, 2, 0, torch.Generator())
    assert nothing(x) is x


def test_token_merging_only_at_full_resolution():
    run = up.PatchRun(0, cpu_generator=torch.Generator().manual_seed(0), input_shape=(1, 4, 4, 4))
    q = torch.randn(2, 16, 8)
    merged, k, v, restore = up.TokenMerging(0.5).self_attention(q, q, q, run)
    assert merged.shape == (2, 8, 8) and k is q and v is q and restore(merged).shape == (2, 16, 8)
    deeper = torch.randn(2, 4, 8)
    assert up.TokenMerging(0.5).self_attention(deeper, deeper, deeper, run) == (deeper, deeper, deeper, None)


def test_token_merging_attention_merges_queries_only():
    attention = _attention_layer()
    hidden = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(2))  # 4x4 tokens
    run = up.PatchRun(0, cpu_generator=torch.Generator().manual_seed(5), input_shape=(1, 4, 4, 4))
    with torch.no_grad():
        out = up.PatchedAttention([up.TokenMerging(0.5)], run)(attention, hidden)
        merge, unmerge = up.bipartite_merge(hidden, 4, 4, 8, torch.Generator().manual_seed(5))
        queries = merge(hidden)[0]  # 8 tokens attend to all 16 keys and values
        expected = unmerge(attention.to_out[0](_attend(attention, queries, hidden[0]))[None])
    assert queries.shape == (8, 8) and torch.allclose(out, expected, atol=1e-5)


def test_patch_run_draws_continue_after_the_starting_noise():
    from diffusion.sampling import custom

    latent = {"samples": torch.zeros(2, 4, 8, 8), "batch_index": [3, 1]}
    run = custom._patch_run(latent, custom.RandomNoise(7))
    comfyui_global = torch.Generator().manual_seed(7)  # torch.manual_seed(seed), then the noise rows 0..3
    for _ in range(4):
        torch.randn(1, 4, 8, 8, generator=comfyui_global)
    assert torch.equal(run.cpu_generator.get_state(), comfyui_global.get_state())
    assert run.generator(torch.device("cpu")) is run.cpu_generator


def test_epsilon_scaling_divides_the_noise_prediction():
    args = {"input": torch.tensor([2.0]), "denoised": torch.tensor([1.0])}
    assert torch.allclose(nodes_up.ScaledEpsilon(2.0)(args), torch.tensor([1.5]))
    assert torch.allclose(nodes_up.ScaledEpsilon(0.5)(args), torch.tensor([0.0]))


def test_differential_mask_thresholds_by_timestep():
    sampling = DiscreteModelSampling()
    sigmas = torch.stack([sampling.sigma(torch.tensor(999.0)), sampling.sigma(torch.tensor(499.0)),
                          torch.tensor(0.0)])
    mask = torch.tensor([0.2, 0.6, 1.0])
    function = up.DifferentialMask()
    # the last sigma (0) is below the schedule's smallest, so the span ends at timestep 0: threshold 499 / 999
    assert function(sigmas[1:2], mask, sigmas, sampling).tolist() == [0.0, 1.0, 1.0]
    assert function(sigmas[0:1], mask, sigmas, sampling).tolist() == [0.0, 0.0, 1.0]
    blended = up.DifferentialMask(0.25)(sigmas[1:2], mask, sigmas, sampling)
    assert torch.allclose(blended, 0.25 * torch.tensor([0.0, 1.0, 1.0]) + 0.75 * mask)
    # a last sigma above the smallest: the span ends there (threshold 0 at it)
    short = sigmas[:2]
    assert function(short[1:2], torch.tensor([0.0, 0.01]), short, sampling).tolist() == [1.0, 1.0]


# --- the hooks on a diffusers UNet ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _FreeUByResolution:
    """FreeU version 1 placed as diffusers' enable_freeu places it: the first two levels of output blocks."""

    layers: int
    b1: float
    b2: float
    s1: float
    s2: float

    def output_block(self, h, hsp, index, run):
        level = index // self.layers
        if level > 1:
            return h, hsp
        backbone, skip = (self.b1, self.s1) if level == 0 else (self.b2, self.s2)
        half = h.shape[1] // 2
        return torch.cat([h[:, :half] * backbone, h[:, half:]], 1), up.fourier_filtered(hsp, 1, skip)


def _unet_call(network, generator_seed=0, size=16):
    generator = torch.Generator().manual_seed(generator_seed)
    sample = torch.randn(2, 4, size, size, generator=generator)
    text = torch.randn(2, 77, network.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        return network(sample, torch.tensor([500.0, 500.0]), encoder_hidden_states=text, return_dict=False)[0]


def _hook_state(network):
    hooks = sum(len(module._forward_hooks) + len(module._forward_pre_hooks) for module in network.modules())
    return hooks, {name: type(processor) for name, processor in network.attn_processors.items()}


def test_block_hooks_reproduce_diffusers_freeu(sd1):
    network = sd1[0].network
    before = _hook_state(network)
    factors = dict(b1=1.4, b2=0.7, s1=0.6, s2=0.3)
    run = up.PatchRun(0, sigma=1.0)
    with up.patches_applied(network, [_FreeUByResolution(len(network.up_blocks[0].resnets), **factors)], run):
        ours = _unet_call(network)
    assert _hook_state(network) == before
    network.enable_freeu(**factors)
    try:
        theirs = _unet_call(network)
    finally:
        network.disable_freeu()
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours, _unet_call(network), atol=1e-3)


def test_hooks_removed_after_a_failed_run(sd1):
    network = sd1[0].network
    before = _hook_state(network)

    class Failing:
        def output_block(self, h, hsp, index, run):
            raise RuntimeError("broken patch")

    with pytest.raises(RuntimeError, match="broken patch"):
        with up.patches_applied(network, [Failing(), up.HyperTile(32, 2, 1, False)], up.PatchRun(0)):
            _unet_call(network)
    assert _hook_state(network) == before


@pytest.mark.parametrize("size", [16, 18])
@pytest.mark.parametrize("after_skip", [True, False])
def test_deep_shrink_runs_through_the_unet(sd1, size, after_skip):
    network = sd1[0].network
    plain = _unet_call(network, size=size)
    shrink = up.DeepShrink(3, 2.0, 1e9, 0.0, after_skip, "bicubic", "bilinear")
    with up.patches_applied(network, [shrink], up.PatchRun(0, sigma=1.0)):
        shrunk = _unet_call(network, size=size)
    assert shrunk.shape == plain.shape and not torch.allclose(shrunk, plain, atol=1e-3)
    # outside its span nothing changes (the upsamplers' sizes as diffusers' own)
    with up.patches_applied(network, [dataclasses.replace(shrink, sigma_start=0.5)], up.PatchRun(0, sigma=1.0)):
        assert torch.allclose(_unet_call(network, size=size), plain, atol=1e-6)


def _comfyui_forward(network, sample, timestep, text, patches, run):
    """The UNet run block by block as ComfyUI's UNetModel.forward runs its blocks and patches, from diffusers'
    modules: the reference the hooks must reproduce."""
    def patched(name, h, index):
        for patch in patches:
            if hasattr(patch, name):
                h = getattr(patch, name)(h, index, run)
        return h

    def output_patched(h, hsp, index):
        for patch in patches:
            if hasattr(patch, "output_block"):
                h, hsp = patch.output_block(h, hsp, index, run)
        return h, hsp

    emb = network.time_embedding(network.time_proj(timestep).to(sample.dtype))
    skips, index = [], 0

    def input_done(h):
        nonlocal index
        h = patched("input_block", h, index)
        skips.append(h)
        h = patched("after_skip", h, index)
        index += 1
        return h

    h = input_done(network.conv_in(sample))
    for block in network.down_blocks:
        attentions = getattr(block, "attentions", None)
        for layer, resnet in enumerate(block.resnets):
            h = resnet(h, emb)
            if attentions is not None:
                h = attentions[layer](h, encoder_hidden_states=text, return_dict=False)[0]
            h = input_done(h)
        for downsampler in block.downsamplers or ():
            h = input_done(downsampler(h))
    h = network.mid_block(h, emb, encoder_hidden_states=text)
    output = 0
    for block in network.up_blocks:
        attentions = getattr(block, "attentions", None)
        for layer, resnet in enumerate(block.resnets):
            h, hsp = output_patched(h, skips.pop(), output)
            output += 1
            h = resnet(torch.cat([h, hsp], dim=1), emb)
            if attentions is not None:
                h = attentions[layer](h, encoder_hidden_states=text, return_dict=False)[0]
        for upsampler in block.upsamplers or ():
            h = upsampler(h, tuple(skips[-1].shape[-2:]))  # ComfyUI: to the next skip's size
    return network.conv_out(network.conv_act(network.conv_norm_out(h)))


@pytest.mark.parametrize("patches", [
    [up.DeepShrink(3, 2.0, 1e9, 0.0, True, "bicubic", "bilinear")],
    [up.DeepShrink(3, 2.0, 1e9, 0.0, False, "area", "nearest-exact")],
    [up.DeepShrink(6, 3.0, 1e9, 0.0, True, "bislerp", "bislerp"), up.FreeU(32, 1.3, 1.4, 0.9, 0.2, 2)],
    [up.FreeU(16, 1.1, 1.2, 0.9, 0.2, 1)],
], ids=["shrink-after-skip", "shrink-before-skip", "shrink-block-6-freeu-v2", "freeu-v1"])
def test_block_hooks_follow_comfyui_block_order(sd1, patches):
    network = sd1[0].network
    generator = torch.Generator().manual_seed(4)
    sample = torch.randn(1, 4, 18, 18, generator=generator)
    text = torch.randn(1, 77, network.config.cross_attention_dim, generator=generator)
    timestep = torch.tensor([400.0])
    run = up.PatchRun(0, sigma=1.0)
    with torch.no_grad():
        expected = _comfyui_forward(network, sample, timestep, text, patches, run)
        with up.patches_applied(network, patches, run):
            hooked = network(sample, timestep, encoder_hidden_states=text, return_dict=False)[0]
        plain = network(sample, timestep, encoder_hidden_states=text, return_dict=False)[0]
    assert torch.allclose(hooked, expected, atol=1e-5)
    assert not torch.allclose(hooked, plain, atol=1e-3)


# --- end to end ----------------------------------------------------------------------------------------------


def _sample(model, clip, size=128, latent=None, scheduler="normal", sampler="euler"):
    positive = CLIPTextEncode().encode(clip, "a cat")[0]
    negative = CLIPTextEncode().encode(clip, "")[0]
    latent = latent or EmptyLatentImage().generate(size, size, 1)[0]
    samples = KSampler().sample(model, 3, 3, 5.0, sampler, scheduler, positive, negative, latent)[0]["samples"]
    return model.latent_format.process_in(samples)  # in model space, where the tolerances are measured


def _patched(name, model, **inputs):
    node = nodes.NODE_CLASS_MAPPINGS[name]()
    return getattr(node, node.FUNCTION)(model, **inputs)[0]


SHRINK = dict(block_number=3, downscale_factor=2.0, start_percent=0.0, end_percent=0.5, downscale_after_skip=True,
              downscale_method="bicubic", upscale_method="bicubic")
# node, inputs that change the result, inputs that leave it as it is (tolerance)
SD1_PATCHES = [
    ("FreeU", dict(b1=1.1, b2=1.2, s1=0.9, s2=0.2), dict(b1=1.0, b2=1.0, s1=1.0, s2=1.0)),
    ("FreeU_V2", dict(b1=1.3, b2=1.4, s1=0.9, s2=0.2), dict(b1=1.0, b2=1.0, s1=1.0, s2=1.0)),
    ("PatchModelAddDownscale", SHRINK, {**SHRINK, "start_percent": 1.0, "end_percent": 1.0}),
    ("PatchModelAddDownscale", {**SHRINK, "downscale_after_skip": False, "downscale_method": "bislerp",
                                "upscale_method": "area"}, {**SHRINK, "downscale_factor": 1.0}),
    ("HyperTile", dict(tile_size=32, swap_size=2, max_depth=1, scale_depth=False),
     dict(tile_size=2048, swap_size=2, max_depth=1, scale_depth=False)),
    ("Epsilon Scaling", dict(scaling_factor=1.1), dict(scaling_factor=1.0)),
]


@pytest.mark.parametrize("name, changing, neutral", SD1_PATCHES)
def test_ksampler_with_patch(sd1, name, changing, neutral):
    model, clip, _ = sd1
    before = _hook_state(model.network)
    plain = _sample(model, clip)
    patched = _patched(name, model, **changing)
    assert patched is not model and model.unet_patches == () and model.post_cfg == ()
    assert not torch.allclose(_sample(patched, clip), plain, atol=1e-3)
    assert torch.allclose(_sample(_patched(name, model, **neutral), clip), plain, atol=1e-4)
    assert _hook_state(model.network) == before


def test_full_resolution_attention_patches_on_sd2(node_env):
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint("tiny-sd2.safetensors")
    plain = _sample(model, clip, size=64)
    for name, changing, neutral in [("TomePatchModel", dict(ratio=0.3), dict(ratio=0.0)),
                                    ("HyperTile", dict(tile_size=32, swap_size=2, max_depth=0, scale_depth=False),
                                     dict(tile_size=256, swap_size=2, max_depth=0, scale_depth=False))]:
        assert not torch.allclose(_sample(_patched(name, model, **changing), clip, size=64), plain, atol=1e-3)
        assert torch.allclose(_sample(_patched(name, model, **neutral), clip, size=64), plain, atol=1e-4)


def test_sdxl_unet_takes_every_patch(node_env, tiny_models_dir):
    from diffusion.families.sdxl import demo as sdxl_tiny

    sdxl_tiny.make_sdxl_demo_models(tiny_models_dir)
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint(f"{sdxl_tiny.DEMO_BASE}.safetensors")
    plain = _sample(model, clip, size=64)
    patched = model
    for name, inputs in [("FreeU_V2", dict(b1=1.3, b2=1.4, s1=0.9, s2=0.2)), ("PatchModelAddDownscale", SHRINK),
                         ("HyperTile", dict(tile_size=32, swap_size=2, max_depth=1, scale_depth=True)),
                         ("TomePatchModel", dict(ratio=0.5))]:
        patched = _patched(name, patched, **inputs)
    result = _sample(patched, clip, size=64)
    assert torch.isfinite(result).all() and not torch.allclose(result, plain, atol=1e-3)


def test_random_draws_follow_the_seed(node_env):
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint("tiny-sd2.safetensors")
    patched = _patched("TomePatchModel", model, ratio=0.5)
    assert torch.equal(_sample(patched, clip, size=64), _sample(patched, clip, size=64))


def test_differential_diffusion(sd1):
    model, clip, _ = sd1
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))}
    differential = _patched("DifferentialDiffusion", model)
    assert differential.denoise_mask_function is not None and model.denoise_mask_function is None
    # no noise mask: nothing to do
    assert torch.equal(_sample(differential, clip, latent=latent), _sample(model, clip, latent=latent))
    # a hard mask is its own threshold at every step above the span's end (at the schedule's smallest sigma the
    # threshold is 0 and, as in ComfyUI, all of the latents are denoised: so stop before it)
    hard = torch.zeros(1, 64, 64)
    hard[:, :, 32:] = 1.0
    masked = SetLatentNoiseMask().set_mask(latent, hard)[0]
    positive, negative = CLIPTextEncode().encode(clip, "a cat")[0], CLIPTextEncode().encode(clip, "")[0]

    def two_of_three_steps(sampled_model):
        return ksample(sampled_model, 3, 3, 5.0, "euler", "normal", positive, negative, masked, last_step=2)

    assert torch.allclose(two_of_three_steps(differential), two_of_three_steps(model))
    soft = SetLatentNoiseMask().set_mask(latent, torch.linspace(0, 1, 64).expand(1, 64, 64))[0]
    plain, ours = _sample(model, clip, latent=soft), _sample(differential, clip, latent=soft)
    assert not torch.allclose(plain, ours, atol=1e-3)


def test_refusals_name_the_input(sd1):
    model, clip, _ = sd1
    not_a_unet = dataclasses.replace(model, network=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="^model: FreeU_V2 works on UNet models"):
        _patched("FreeU_V2", not_a_unet, b1=1.3, b2=1.4, s1=0.9, s2=0.2)
    with pytest.raises(ValueError, match="^model: HyperTile: these patches work on UNet models"):
        _patched("HyperTile", not_a_unet, tile_size=256, swap_size=2, max_depth=0, scale_depth=False)
    patched = _patched("FreeU", model, b1=1.1, b2=1.2, s1=0.9, s2=0.2)
    with pytest.raises(ValueError, match="^scheduler: 'diffusers'.*UNet patches"):
        _sample(patched, clip, scheduler="diffusers")


@pytest.mark.parametrize("name", ["FreeU", "FreeU_V2", "PatchModelAddDownscale", "HyperTile", "TomePatchModel"])
def test_transformer_families_refused_at_validation(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert node_class.VALIDATE_INPUTS({"model": {"family": "flux"}}) == (
        f"model: {name} works on UNet models (SD1.x, SD2.x, SDXL); this one is a FLUX model")
    for facts in ({"model": {"family": "sdxl"}}, {"model": {"family": "sd"}}, {}, {"model": {"family": "plugin"}}):
        assert node_class.VALIDATE_INPUTS(facts) is True


def test_flux_model_refused_at_validation_naming_the_input(node_env, tiny_models_dir):
    from diffusion.families.flux import demo as tiny_flux
    from tests.nodes.conftest import validation_errors

    tiny_flux.make_flux_demo_models(tiny_models_dir)
    prompt = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": tiny_flux.DEMO_FLUX_TRANSFORMER,
                                                        "weight_dtype": "default"}},
        "freeu": {"class_type": "FreeU_V2", "inputs": {"model": ["unet", 0], "b1": 1.3, "b2": 1.4, "s1": 0.9,
                                                       "s2": 0.2}},
        "eps": {"class_type": "Epsilon Scaling", "inputs": {"model": ["unet", 0], "scaling_factor": 1.005}},
    }
    errors = validation_errors(prompt)
    assert list(errors) == ["freeu"]  # Epsilon Scaling works on any model
    (error,) = errors["freeu"]
    assert error["extra_info"]["input_name"] == "model" and "FreeU_V2 works on UNet models" in error["details"]


def _workflow(patches: list[tuple[str, dict]], latent: list, extra: dict | None = None) -> dict:
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd1.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "unet_patches"}},
        **(extra or {}),
    }
    model = ["1", 0]
    for index, (class_type, inputs) in enumerate(patches):
        node_id = str(10 + index)
        prompt[node_id] = {"class_type": class_type, "inputs": {"model": model, **inputs}}
        model = [node_id, 0]
    prompt["5"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": 5, "steps": 3, "cfg": 6.0, "sampler_name": "euler", "scheduler": "karras",
        "denoise": 1.0, "positive": ["2", 0], "negative": ["3", 0], "latent_image": latent}}
    return prompt


def test_workflow_with_unet_patches(node_env):
    prompt = _workflow([
        ("FreeU_V2", {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}),
        ("PatchModelAddDownscale", {"block_number": 3, "downscale_factor": 2.0, "start_percent": 0.0,
                                    "end_percent": 0.35, "downscale_after_skip": True,
                                    "downscale_method": "bicubic", "upscale_method": "bislerp"}),
        ("HyperTile", {"tile_size": 256, "swap_size": 2, "max_depth": 0, "scale_depth": False}),
        ("TomePatchModel", {"ratio": 0.3}),
        ("Epsilon Scaling", {"scaling_factor": 1.005}),
        ("FreeU", {"b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2}),
    ], ["4", 0])
    images = run_workflow(node_env, prompt, size=128)
    assert len(images) == 1 and images[0].size == (128, 128)


def test_workflow_with_differential_diffusion(node_env):
    extra = {
        "20": {"class_type": "SolidMask", "inputs": {"value": 0.6, "width": 64, "height": 64}},
        "21": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["4", 0], "mask": ["20", 0]}},
    }
    prompt = _workflow([("DifferentialDiffusion", {"strength": 0.8})], ["21", 0], extra)
    images = run_workflow(node_env, prompt)
    assert len(images) == 1 and images[0].size == (64, 64)
