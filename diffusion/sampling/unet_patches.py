"""Patches of a UNet's computation while a sampler runs, with ComfyUI's numbers: FreeU and FreeU_V2 (backbone
and skip scaling), Kohya's deep shrink (PatchModelAddDownscale), HyperTile (tiled self-attention) and token
merging (ToMe), plus the per-step noise mask of Differential Diffusion.

ComfyUI describes a UNet as a list of input blocks (the input convolution, then each level's resnet + attention
layers and its downsampler), a middle block and a list of output blocks, each of which takes the hidden state `h`
and the skip `hsp` of the mirrored input block. Its patches hook in there: after an input block (before or after
its output is kept as a skip), before an output block concatenates `h` and `hsp`, and around each transformer
block's self-attention. `patches_applied` puts the same hooks on a diffusers UNet2DConditionModel (module hooks
and self-attention processors) for one sampling run and removes them afterwards, also on error: the network is
shared with the model cache and every other MODEL wire holding it.

A patch object has any of: `input_block(h, index, run)`, `after_skip(h, index, run)`, `output_block(h, hsp,
index, run)` (ComfyUI's input_block_patch, input_block_patch_after_skip, output_block_patch, `index` counted as
ComfyUI counts blocks) and `self_attention(q, k, v, run)` -> (q, k, v, restore or None) (ComfyUI's attn1_patch;
`restore` is its attn1_output_patch for that call). Patches of any transformer block's self- or cross-attention
(`AttentionPlace`: ComfyUI's attn1/attn2 at its block, block index and transformer index) may have
`attention_inputs(place, q, k, v, run)` -> (q, k, v) (ComfyUI's attn1_patch / attn2_patch, on the inputs of the
projections), `attention_output(place, out, run)` -> out (attn1/attn2_output_patch, after the output projection)
and `replaced_attention(place)` -> a function (q, k, v, run) -> out of the projected query, key and value, or
None (attn1/attn2_replace). `run` is the `PatchRun`: the sigma of the current network call, the shape of the
network's input and of the current transformer's input, which guidance rows the call has (`cond_or_uncond`) and
the run's random generator. Knows nothing of nodes or guiders.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from diffusion.sampling import run_seed

RESIZE_METHODS = ("bicubic", "nearest-exact", "bilinear", "area", "bislerp")


@dataclass(eq=False)
class PatchRun:
    """What the patches see during one sampling run: the noise level of the current network call (`sigma`, set by
    the sampler before each call), the shape of the latents the UNet is called with (`input_shape`, ComfyUI's
    original_shape) and the seed that the run's random choices (HyperTile's tiles, ToMe's partition) come from."""

    seed: int
    cpu_generator: torch.Generator | None = None
    sigma: float | None = None
    input_shape: tuple[int, ...] | None = None
    activations_shape: tuple[int, ...] | None = None  # the current transformer's input (ComfyUI's name)
    _generators: dict[str, torch.Generator] = field(default_factory=dict)

    @property
    def cond_or_uncond(self) -> tuple[int, ...]:
        """Which conditioning each chunk of the current network call's rows belongs to, as ComfyUI numbers them
        (0 the positive, 1 the negative): set by the guidance around each call (`run_seed.network_call`)."""
        return run_seed.current_cond_or_uncond()

    def generator(self, device: torch.device) -> torch.Generator:
        """The generator of the run's random choices on `device`. ComfyUI draws them from torch's global
        generators, which its noise preparation seeded (`torch.manual_seed(seed)`, all devices) and then advanced
        on the CPU by drawing the starting noise: on the CPU that state is `cpu_generator` (the sampler's, after
        the starting noise), elsewhere a fresh generator seeded with the seed."""
        device = torch.device(device)
        if device.type == "cpu" and self.cpu_generator is not None:
            return self.cpu_generator
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device).manual_seed(self.seed)
        return self._generators[key]


# --- FreeU ---------------------------------------------------------------------------------------------------


def fourier_filtered(x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
    """`x` [B, C, H, W] with its lowest spatial frequencies scaled by `scale`: in the centred 2-D spectrum, the
    square of 2 * `threshold` frequencies around the centre (clipped at the edges), as FreeU filters the skips.
    Computed in float32, returned in x's dtype."""
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    height, width = spectrum.shape[-2:]
    weights = torch.ones(spectrum.shape[-2:], device=x.device)
    centre_row, centre_column = height // 2, width // 2
    weights[max(centre_row - threshold, 0):centre_row + threshold,
            max(centre_column - threshold, 0):centre_column + threshold] = scale
    filtered = torch.fft.ifftn(torch.fft.ifftshift(spectrum * weights, dim=(-2, -1)), dim=(-2, -1)).real
    return filtered.to(x.dtype)


def _relative_mean(h: torch.Tensor) -> torch.Tensor:
    """FreeU_V2's backbone weight: the channel mean of `h` [B, C, H, W], min-max normalized per row ([B, 1, H,
    W] in 0..1). A row whose mean is the same everywhere (a 1x1 hidden state) weighs 1 everywhere, where ComfyUI
    divides 0 by 0 and fills the image with NaN."""
    mean = h.mean(1, keepdim=True)
    rows = mean.reshape(mean.shape[0], -1)
    low = rows.min(dim=-1).values.reshape(-1, 1, 1, 1)
    spread = rows.max(dim=-1).values.reshape(-1, 1, 1, 1) - low
    return torch.where(spread == 0, torch.ones_like(mean), (mean - low) / spread)


@dataclass(frozen=True)
class FreeU:
    """FreeU (Si et al. 2023) as ComfyUI's FreeU and FreeU_V2 apply it: at every output block whose incoming
    hidden state has 4x the model's base channels, the first half of its channels is scaled by b1 and the skip's
    low frequencies by s1 (`fourier_filtered`, threshold 1); at 2x the base channels, by b2 and s2. Version 1
    scales by the factor itself; version 2 by 1 + (factor - 1) times the normalized channel mean
    (`_relative_mean`), as the FreeU authors' second version and diffusers' FreeU do. (Which blocks are scaled
    follows the channel count, as in ComfyUI, not the resolution index diffusers' enable_freeu uses.)"""

    base_channels: int
    b1: float
    b2: float
    s1: float
    s2: float
    version: int = 2

    def output_block(self, h: torch.Tensor, hsp: torch.Tensor, index: int,
                     run: PatchRun) -> tuple[torch.Tensor, torch.Tensor]:
        scales = {self.base_channels * 4: (self.b1, self.s1), self.base_channels * 2: (self.b2, self.s2)}
        scale = scales.get(int(h.shape[1]))
        if scale is None:
            return h, hsp
        backbone, skip = scale
        half = h.shape[1] // 2
        factor = backbone if self.version == 1 else (backbone - 1) * _relative_mean(h) + 1
        h = torch.cat([h[:, :half] * factor, h[:, half:]], dim=1)
        return h, fourier_filtered(hsp, 1, skip)


# --- Kohya deep shrink ---------------------------------------------------------------------------------------


def _slerp(low: torch.Tensor, high: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the row vectors `low` towards `high` [N, C] by `ratio` [N, 1], the length
    interpolated linearly (a zero row counts as direction zero); rows pointing (nearly) the same way give `low`,
    (nearly) opposite rows the linear interpolation, as ComfyUI's bislerp has it."""
    low_norm, high_norm = low.norm(dim=-1, keepdim=True), high.norm(dim=-1, keepdim=True)
    low_unit = torch.where(low_norm == 0, torch.zeros_like(low), low / low_norm)
    high_unit = torch.where(high_norm == 0, torch.zeros_like(high), high / high_norm)
    cosine = (low_unit * high_unit).sum(1)
    angle = torch.acos(cosine)
    sine = torch.sin(angle)
    weight = ratio.squeeze(1)
    direction = ((torch.sin((1.0 - weight) * angle) / sine).unsqueeze(1) * low_unit
                 + (torch.sin(weight * angle) / sine).unsqueeze(1) * high_unit)
    result = direction * (low_norm * (1.0 - ratio) + high_norm * ratio)
    same, opposite = cosine > 1 - 1e-5, cosine < 1e-5 - 1
    result[same] = low[same]
    result[opposite] = (low * (1.0 - ratio) + high * ratio)[opposite]
    return result


def _bilinear_sources(old: int, new: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of `new` positions resampling `old` ones bilinearly: the first and second source index and the
    weight of the second (the positions computed by bilinear interpolation of the indices, edges clamped)."""
    positions = F.interpolate(torch.arange(old, dtype=torch.float32, device=device).reshape(1, 1, 1, -1),
                              size=(1, new), mode="bilinear").flatten()
    first = positions.to(torch.int64)
    return first, (first + 1).clamp(max=old - 1), positions - positions.floor()


def _bislerp_axis(samples: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """`samples` [B, C, H, W] resized along `axis` (2 rows, 3 columns) to `size` by slerping each pixel's channel
    vector between its two bilinear source pixels (`_bilinear_sources`, `_slerp`)."""
    first, second, ratio = _bilinear_sources(samples.shape[axis], size, samples.device)
    moved = samples.movedim(axis, -1)  # [B, C, other, old]
    low, high = moved[..., first].movedim(1, -1), moved[..., second].movedim(1, -1)  # [B, other, size, C]
    shape = low.shape
    weights = ratio.reshape(1, 1, size, 1).expand(shape[0], shape[1], size, 1)
    mixed = _slerp(low.reshape(-1, shape[-1]), high.reshape(-1, shape[-1]), weights.reshape(-1, 1))
    return mixed.reshape(shape).movedim(-1, 1).movedim(-1, axis)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """`samples` [B, C, H, W] resized to width x height by spherical interpolation of the channel vectors, first
    along the columns, then the rows (ComfyUI's "bislerp" resize of latents)."""
    dtype = samples.dtype
    resized = _bislerp_axis(samples.float(), width, 3)
    return _bislerp_axis(resized, height, 2).to(dtype)


def resized(h: torch.Tensor, width: int, height: int, method: str) -> torch.Tensor:
    """`h` [B, C, H, W] resized to width x height with one of `RESIZE_METHODS`."""
    if method == "bislerp":
        return bislerp(h, width, height)
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}")
    return F.interpolate(h, size=(height, width), mode=method)


@dataclass(frozen=True)
class DeepShrink:
    """Kohya's deep shrink, as ComfyUI's PatchModelAddDownscale: while the current sigma lies in [sigma_end,
    sigma_start], the hidden state after input block `block_number` is shrunk by `factor` (each side rounded),
    either before it is kept as a skip or only the part that goes on (`shrink_after_skip`); any output block whose
    hidden state and skip differ in size gets the hidden state resized to the skip's size first."""

    block_number: int
    factor: float
    sigma_start: float
    sigma_end: float
    shrink_after_skip: bool
    downscale_method: str
    upscale_method: str

    def _shrunk(self, h: torch.Tensor, index: int, run: PatchRun) -> torch.Tensor:
        if index != self.block_number or run.sigma is None or not self.sigma_end <= run.sigma <= self.sigma_start:
            return h
        width = max(1, round(h.shape[-1] * (1.0 / self.factor)))
        height = max(1, round(h.shape[-2] * (1.0 / self.factor)))
        return resized(h, width, height, self.downscale_method)

    def input_block(self, h: torch.Tensor, index: int, run: PatchRun) -> torch.Tensor:
        return h if self.shrink_after_skip else self._shrunk(h, index, run)

    def after_skip(self, h: torch.Tensor, index: int, run: PatchRun) -> torch.Tensor:
        return self._shrunk(h, index, run) if self.shrink_after_skip else h

    def output_block(self, h: torch.Tensor, hsp: torch.Tensor, index: int,
                     run: PatchRun) -> tuple[torch.Tensor, torch.Tensor]:
        if h.shape[2] != hsp.shape[2]:
            h = resized(h, hsp.shape[-1], hsp.shape[-2], self.upscale_method)
        return h, hsp


# --- HyperTile -----------------------------------------------------------------------------------------------


def random_divisor(value: int, smallest: int, options: int, generator: torch.Generator) -> int:
    """HyperTile's number of tiles along a side of `value` tokens: value // d for a divisor d of `value` of at
    least `smallest` (or `value`); one of the `options` largest tile counts, drawn with `generator`. As ComfyUI
    draws it (torch.randint's exclusive upper bound), the last of several options is never drawn, but a draw
    is made whenever there are several."""
    smallest = min(smallest, value)
    counts = [value // divisor for divisor in range(smallest, value + 1) if value % divisor == 0][:options]
    if len(counts) < 2:
        return counts[0]
    choice = torch.randint(0, len(counts) - 1, (1,), generator=generator, device=generator.device)
    return counts[int(choice.item())]


def _tiled(tokens: torch.Tensor, rows: int, columns: int, tile_rows: int, tile_columns: int) -> torch.Tensor:
    """[B, rows * columns, C] in raster order -> [B * tile_rows * tile_columns, tokens of one tile, C]."""
    batch, _, channels = tokens.shape
    grid = tokens.reshape(batch, tile_rows, rows // tile_rows, tile_columns, columns // tile_columns, channels)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(batch * tile_rows * tile_columns, -1, channels)


def _untiled(tiles: torch.Tensor, rows: int, columns: int, tile_rows: int, tile_columns: int) -> torch.Tensor:
    """The inverse of `_tiled`."""
    channels = tiles.shape[-1]
    grid = tiles.reshape(-1, tile_rows, tile_columns, rows // tile_rows, columns // tile_columns, channels)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(grid.shape[0], rows * columns, channels)


@dataclass(frozen=True)
class HyperTile:
    """HyperTile (tfernd), as ComfyUI's node: the self-attention queries of the levels down to `max_depth` are cut
    into tiles of at least `tile_size` / 8 latent pixels (times 2 per level with `scale_depth`), the tile counts
    per side drawn by `random_divisor` among the `swap_size` largest. As in ComfyUI, only the queries are tiled:
    each tile's queries attend to the keys and values of the untiled sequence split into as many consecutive
    chunks (its batch reshape), and the token grid is taken as sqrt(tokens * width / height) rows."""

    tile_size: int
    swap_size: int
    max_depth: int
    scale_depth: bool

    def self_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, run: PatchRun) -> tuple[
            torch.Tensor, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor] | None]:
        height, width = run.input_shape[-2:]
        level_tokens = [(height / 2 ** depth) * (width / 2 ** depth) for depth in range(self.max_depth + 1)]
        tokens = q.shape[-2]
        if tokens not in level_tokens:
            return q, k, v, None
        aspect = width / height
        rows, columns = round(math.sqrt(tokens * aspect)), round(math.sqrt(tokens / aspect))
        factor = 2 ** level_tokens.index(tokens) if self.scale_depth else 1
        smallest = max(32, self.tile_size) // 8 * factor
        generator = run.generator(q.device)
        tile_rows = random_divisor(rows, smallest, self.swap_size, generator)
        tile_columns = random_divisor(columns, smallest, self.swap_size, generator)
        if tile_rows * tile_columns <= 1:
            return q, k, v, None

        def restore(out: torch.Tensor) -> torch.Tensor:
            return _untiled(out, rows, columns, tile_rows, tile_columns)

        return _tiled(q, rows, columns, tile_rows, tile_columns), k, v, restore


# --- token merging (ToMe) ------------------------------------------------------------------------------------


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, N, C] at the token indices `index` [B, M] -> [B, M, C]."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def bipartite_merge(metric: torch.Tensor, height: int, width: int, count: int, generator: torch.Generator
                    ) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """Token merging by bipartite soft matching (Bolya et al., ToMe for Stable Diffusion), as ComfyUI's
    TomePatchModel does it: of `metric` [B, H*W, C] (tokens of a height x width grid, raster order), one token per
    full 2x2 cell, drawn with `generator`, is a destination and the rest are sources; each source's most similar
    destination (cosine) is found and the `count` sources most similar to theirs are merged into them (averaged
    with the destination). Returns (merge, unmerge): merge [B, N, C] -> [B, N - count, C] (unmerged sources,
    then destinations), unmerge puts a merged sequence back, each merged source taking its destination's value.
    Nothing is merged for a count of 0 or a grid one token high or wide."""
    batch, tokens, _ = metric.shape
    if count <= 0 or height == 1 or width == 1:
        return _identity, _identity
    cells_high, cells_wide = height // 2, width // 2
    corner = torch.randint(4, (cells_high, cells_wide), generator=generator, device=generator.device)
    corner = corner.to(metric.device)
    rows = torch.arange(cells_high, device=metric.device)[:, None] * 2 + corner // 2
    columns = torch.arange(cells_wide, device=metric.device)[None, :] * 2 + corner % 2
    is_destination = torch.zeros(height, width, dtype=torch.bool, device=metric.device)
    is_destination[rows, columns] = True
    destinations = torch.nonzero(is_destination.flatten()).squeeze(1)
    sources = torch.nonzero(~is_destination.flatten()).squeeze(1)
    count = min(count, len(sources))

    unit = metric / metric.norm(dim=-1, keepdim=True)
    scores = unit[:, sources] @ unit[:, destinations].transpose(-1, -2)
    best_score, best_destination = scores.max(dim=-1)
    ranked = best_score.argsort(dim=-1, descending=True)
    merged, kept = ranked[:, :count], ranked[:, count:]
    targets = torch.gather(best_destination, 1, merged)

    def merge(x: torch.Tensor) -> torch.Tensor:
        source_tokens, destination_tokens = x[:, sources], x[:, destinations]
        moving = _gather_rows(source_tokens, merged)
        destination_tokens = destination_tokens.scatter_reduce(
            1, targets.unsqueeze(-1).expand(-1, -1, x.shape[-1]), moving, reduce="mean")
        return torch.cat([_gather_rows(source_tokens, kept), destination_tokens], dim=1)

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        kept_tokens, destination_tokens = x[:, :kept.shape[1]], x[:, kept.shape[1]:]
        channels = x.shape[-1]
        out = torch.zeros(batch, tokens, channels, device=x.device, dtype=x.dtype)
        out[:, destinations] = destination_tokens
        out.scatter_(1, sources[kept].unsqueeze(-1).expand(-1, -1, channels), kept_tokens)
        out.scatter_(1, sources[merged].unsqueeze(-1).expand(-1, -1, channels),
                     _gather_rows(destination_tokens, targets))
        return out

    return merge, unmerge


@dataclass(frozen=True)
class TokenMerging:
    """ToMe for SD, as ComfyUI's TomePatchModel: in the self-attention of the full-resolution level only, `ratio`
    of the query tokens are merged (`bipartite_merge`, similarity of the normalized hidden states) before the
    attention and put back after it; keys and values stay whole."""

    ratio: float

    def self_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, run: PatchRun) -> tuple[
            torch.Tensor, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor] | None]:
        height, width = run.input_shape[-2:]
        downsample = int(math.ceil(math.sqrt((height * width) // q.shape[1])))
        if downsample > 1:
            return q, k, v, None
        merge, unmerge = bipartite_merge(q, height, width, int(q.shape[1] * self.ratio), run.generator(q.device))
        return merge(q), k, v, unmerge


# --- Differential Diffusion ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DifferentialMask:
    """Differential Diffusion's noise mask for a step (ComfyUI's DifferentialDiffusion): the mask thresholded at
    how far the step is through the run, measured in timesteps from the first sigma to the last (or the model's
    smallest, if larger), so that each area is changed only for as long as its mask value asks; with `strength`
    below 1, mixed with the mask as it is."""

    strength: float = 1.0

    def __call__(self, sigma: torch.Tensor, mask: torch.Tensor, sigmas: torch.Tensor,
                 model_sampling: Any) -> torch.Tensor:
        last = model_sampling.sigma_min
        if sigmas[-1] > last:
            last = sigmas[-1]
        first_timestep = model_sampling.timestep(sigmas[0])
        last_timestep = model_sampling.timestep(last)
        threshold = (model_sampling.timestep(sigma[0]) - last_timestep) / (first_timestep - last_timestep)
        binary = (mask >= threshold).to(mask.dtype)
        if self.strength and self.strength < 1:
            return self.strength * binary + (1 - self.strength) * mask
        return binary


# --- putting the hooks on a diffusers UNet -------------------------------------------------------------------


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_first(output: Any, tensor: torch.Tensor) -> Any:
    return (tensor,) + tuple(output[1:]) if isinstance(output, tuple) else tensor


@dataclass
class UNetLayout:
    """A diffusers UNet in ComfyUI's block numbering: for each input block, the module whose output is that
    block's output and the module that takes it next; for each output block, the module producing its incoming
    hidden state and the resnet taking the concatenation; each level's upsampler with the output block it feeds."""

    inputs: list[Any]
    next_consumers: list[Any]
    output_producers: list[Any]
    output_resnets: list[Any]
    upsamplers: list[tuple[Any, int]]  # (upsampler, the output block after it)

    @staticmethod
    def of(network: Any) -> "UNetLayout | None":
        """The layout of a diffusers UNet2DConditionModel-like network; None for another network."""
        down_blocks, up_blocks = getattr(network, "down_blocks", None), getattr(network, "up_blocks", None)
        mid_block = getattr(network, "mid_block", None)
        if down_blocks is None or up_blocks is None or mid_block is None or not hasattr(network, "conv_in"):
            return None
        inputs: list[Any] = [network.conv_in]
        consumers: list[Any] = []
        for block in down_blocks:
            attentions = getattr(block, "attentions", None)
            for index, resnet in enumerate(block.resnets):
                consumers.append(resnet)
                inputs.append(attentions[index] if attentions is not None else resnet)
            for downsampler in getattr(block, "downsamplers", None) or ():
                consumers.append(downsampler)
                inputs.append(downsampler)
        consumers.append(mid_block)
        producers, resnets, upsamplers = [], [], []
        previous: Any = mid_block
        for block in up_blocks:
            attentions = getattr(block, "attentions", None)
            for index, resnet in enumerate(block.resnets):
                producers.append(previous)
                resnets.append(resnet)
                previous = attentions[index] if attentions is not None else resnet
            for upsampler in getattr(block, "upsamplers", None) or ():
                upsamplers.append((upsampler, len(resnets)))
            previous = block
        return UNetLayout(inputs, consumers, producers, resnets, upsamplers)


@dataclass(frozen=True)
class AttentionPlace:
    """Where an attention sits in ComfyUI's numbering of a UNet: `kind` "attn1" (self) or "attn2" (cross), `block`
    ("input", id) / ("middle", 0) / ("output", id) as ComfyUI numbers its blocks, `block_index` the transformer
    block within that block's spatial transformer, `transformer_index` the spatial transformer's place among all of
    the UNet's in the order the network runs them, `heads` and `head_width` of the attention."""

    kind: str
    block: tuple[str, int]
    block_index: int
    transformer_index: int
    heads: int
    head_width: int


def attention_places(network: Any) -> list[tuple[Any, Any, AttentionPlace]]:
    """(spatial transformer, attention module, place) of every attention of a diffusers UNet's transformer blocks,
    in the order the network runs them."""
    layout = UNetLayout.of(network)
    transformers: list[tuple[Any, tuple[str, int]]] = []
    for block in network.down_blocks:
        for attention in getattr(block, "attentions", None) or ():
            transformers.append((attention, ("input", layout.inputs.index(attention))))
    for attention in getattr(network.mid_block, "attentions", None) or ():
        transformers.append((attention, ("middle", 0)))
    output_id = 0
    for block in network.up_blocks:
        attentions = getattr(block, "attentions", None)
        for index in range(len(block.resnets)):
            if attentions is not None:
                transformers.append((attentions[index], ("output", output_id)))
            output_id += 1
    places = []
    for transformer_index, (transformer, block_name) in enumerate(transformers):
        for block_index, transformer_block in enumerate(transformer.transformer_blocks):
            for kind in ("attn1", "attn2"):
                attention = getattr(transformer_block, kind, None)
                if attention is None or not hasattr(attention, "set_processor"):
                    continue
                heads = attention.heads
                places.append((transformer, attention, AttentionPlace(
                    kind, block_name, block_index, transformer_index, heads, attention.to_q.out_features // heads)))
    return places


def _hidden_argument(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden_argument(args: tuple, kwargs: dict, tensor: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (tensor,) + tuple(args[1:]), kwargs
    return args, {**kwargs, "hidden_states": tensor}


class _BlockHooks:
    """The block patches of one run on a UNet's modules (see the module docstring)."""

    def __init__(self, layout: UNetLayout, patches: Sequence[Any], run: PatchRun) -> None:
        self.layout, self.run = layout, run
        self.input_patches = [p for p in patches if hasattr(p, "input_block")]
        self.skip_patches = [p for p in patches if hasattr(p, "after_skip")]
        self.output_patches = [p for p in patches if hasattr(p, "output_block")]
        self.skips: dict[int, torch.Tensor] = {}
        self.patched_skips: dict[int, torch.Tensor] = {}

    def install(self, stack: contextlib.ExitStack) -> None:
        layout = self.layout
        for index, module in enumerate(layout.inputs):
            self._hook(stack, module.register_forward_hook(self._input_done(index)))
            self._hook(stack, layout.next_consumers[index].register_forward_pre_hook(
                self._continuing(index), with_kwargs=True))
        for index, (producer, resnet) in enumerate(zip(layout.output_producers, layout.output_resnets)):
            self._hook(stack, producer.register_forward_hook(self._output_coming(index)))
            self._hook(stack, resnet.register_forward_pre_hook(self._concatenated(index), with_kwargs=True))
        for upsampler, next_output in layout.upsamplers:
            self._hook(stack, upsampler.register_forward_pre_hook(self._upsampling(next_output), with_kwargs=True))

    @staticmethod
    def _hook(stack: contextlib.ExitStack, handle: Any) -> None:
        stack.callback(handle.remove)

    def _skip_index(self, output_index: int) -> int:
        return len(self.layout.inputs) - 1 - output_index

    def _input_done(self, index: int) -> Callable:
        def hook(module: Any, args: Any, output: Any) -> Any:
            h = _first(output)
            for patch in self.input_patches:
                h = patch.input_block(h, index, self.run)
            self.skips[index] = h
            return _with_first(output, h)
        return hook

    def _continuing(self, index: int) -> Callable:
        def hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            # a module consuming several inputs' outputs (none here) would see only its own predecessor's
            h = _hidden_argument(args, kwargs)
            if h is not self.skips.get(index):
                return None
            for patch in self.skip_patches:
                h = patch.after_skip(h, index, self.run)
            return _with_hidden_argument(args, kwargs, h)
        return hook

    def _output_coming(self, index: int) -> Callable:
        def hook(module: Any, args: Any, output: Any) -> Any:
            h, hsp = _first(output), self.skips[self._skip_index(index)]
            skip = hsp
            for patch in self.output_patches:
                h, hsp = patch.output_block(h, hsp, index, self.run)
            if hsp is not skip:
                self.patched_skips[index] = hsp
            return _with_first(output, h)
        return hook

    def _concatenated(self, index: int) -> Callable:
        def hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            hsp = self.patched_skips.pop(index, None)
            if hsp is None:
                return None
            joined = _hidden_argument(args, kwargs)
            return _with_hidden_argument(args, kwargs, torch.cat([joined[:, :-hsp.shape[1]], hsp], dim=1))
        return hook

    def _upsampling(self, next_output: int) -> Callable:
        """ComfyUI upsamples to the size of the skip the next output block takes (twice the size, unless deep
        shrink changed the sizes)."""
        def hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            skip = self.skips.get(self._skip_index(next_output))
            if skip is None or type(module).__name__ != "Upsample2D":
                return None
            size = tuple(skip.shape[-2:])
            if len(args) > 1:
                return (args[0], size) + tuple(args[2:]), kwargs
            return args, {**kwargs, "output_size": size}
        return hook


class PatchedAttention:
    """A diffusers attention processor for one attention of a transformer block (`place`) with the patches that
    apply there, in their order: self-attention patches (attn1 only) and ComfyUI-style input patches change the
    query, key and value inputs before their projections; a replacing patch computes the attention of the projected
    query, key and value (else scaled dot-product attention, keys and values split into as many rows as the queries
    have: ComfyUI's batch reshape); after the output projection the self-attention patches' restores and the output
    patches change the result."""

    def __init__(self, patches: Sequence[Any], run: PatchRun, place: AttentionPlace | None = None) -> None:
        self.run, self.place = run, place
        self.self_patches = [p for p in patches if hasattr(p, "self_attention")] \
            if place is None or place.kind == "attn1" else []
        self.input_patches = [p for p in patches if hasattr(p, "attention_inputs")] if place is not None else []
        self.output_patches = [p for p in patches if hasattr(p, "attention_output")] if place is not None else []
        replacing = [p.replaced_attention(place) for p in patches if hasattr(p, "replaced_attention")] \
            if place is not None else []
        replacing = [function for function in replacing if function is not None]
        self.replacement = replacing[-1] if replacing else None  # the last one set wins, as ComfyUI's dict keeps it

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = hidden_states, context, context
        restores = []
        for patch in self.self_patches:
            q, k, v, restore = patch.self_attention(q, k, v, self.run)
            if restore is not None:
                restores.append(restore)
        for patch in self.input_patches:
            q, k, v = patch.attention_inputs(self.place, q, k, v, self.run)
        query, key, value = attn.to_q(q), attn.to_k(k), attn.to_v(v)
        if self.replacement is not None:
            out = self.replacement(query, key, value, self.run).to(query.dtype)
        else:
            out = _attention(query, key, value, attn.heads, attn.scale)
        out = attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor
        for restore in restores:
            out = restore(out)
        for patch in self.output_patches:
            out = patch.attention_output(self.place, out, self.run)
        return out


def _attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int,
               scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product attention of [rows, tokens, heads * width] projections, keys and values split into as
    many rows as the queries have."""
    rows = query.shape[0]
    head_width = query.shape[-1] // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(rows, -1, heads, head_width).transpose(1, 2)

    attended = F.scaled_dot_product_attention(split(query), split(key), split(value), scale=scale)
    return attended.transpose(1, 2).reshape(rows, -1, heads * head_width).to(query.dtype)


@contextlib.contextmanager
def _input_shape_recorded(network: Any, run: PatchRun) -> Iterator[None]:
    def record(module: Any, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        run.input_shape = tuple(sample.shape)

    handle = network.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def unsupported(network: Any, patches: Sequence[Any]) -> str | None:
    """Why `network` cannot take UNet patches (it is not a diffusers UNet), or None."""
    if patches and UNetLayout.of(network) is None:
        return (f"these patches work on UNet models (SD1.x, SD2.x, SDXL); this model's network is a "
                f"{type(network).__name__}")
    return None


@contextlib.contextmanager
def patches_applied(network: Any, patches: Sequence[Any], run: PatchRun) -> Iterator[None]:
    """The UNet patches `patches` on `network` while the block runs (`run` is what they see); the network's own
    hooks and attention processors afterwards."""
    if not patches:
        yield
        return
    problem = unsupported(network, patches)
    if problem is not None:
        raise ValueError(problem)
    layout = UNetLayout.of(network)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_input_shape_recorded(network, run))
        if any(hasattr(patch, name) for patch in patches
               for name in ("input_block", "after_skip", "output_block")):
            _BlockHooks(layout, patches, run).install(stack)
        if any(hasattr(patch, name) for patch in patches for name in _ATTENTION_PATCH_METHODS):
            _install_attention_patches(stack, network, patches, run)
        yield


_ATTENTION_PATCH_METHODS = ("self_attention", "attention_inputs", "attention_output", "replaced_attention")


def _install_attention_patches(stack: contextlib.ExitStack, network: Any, patches: Sequence[Any],
                               run: PatchRun) -> None:
    """A `PatchedAttention` on every attention some patch applies to (its own processor back on exit), and the
    spatial transformers' input shapes recorded for the patches (ComfyUI's activations_shape)."""
    recorded: set[int] = set()
    for transformer, attention, place in attention_places(network):
        processor = PatchedAttention(patches, run, place)
        if not (processor.self_patches or processor.input_patches or processor.output_patches
                or processor.replacement):
            continue
        saved = attention.processor
        attention.set_processor(processor)
        stack.callback(attention.set_processor, saved)
        if id(transformer) not in recorded:
            recorded.add(id(transformer))
            stack.callback(transformer.register_forward_pre_hook(_activations_recorder(run), with_kwargs=True).remove)


def _activations_recorder(run: PatchRun) -> Callable:
    def record(module: Any, args: tuple, kwargs: dict) -> None:
        run.activations_shape = tuple(_hidden_argument(args, kwargs).shape)
    return record
