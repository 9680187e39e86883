"""GUIDER values: what turns a model and its conditioning into the denoiser the sigma-based samplers drive
(`diffusion.sampling.denoising.Denoiser`), ComfyUI's CFGGuider, BasicGuider, DualCFGGuider and PerpNegGuider.

One call of a guider's denoiser runs the model's network once per group of guidance rows (negatives first, then
positives, as ComfyUI batches them), turns each row's raw output into a denoised estimate with the model's
`ModelSampling` (`calculate_input` before the network, `calculate_denoised` after, at the network's own timestep)
and combines the rows: each side's entries blended by strength, then classifier-free guidance on the denoised
estimates, as ComfyUI's `cfg_function` does. The negative rows are skipped when cfg is 1 (ComfyUI's cfg1
optimization). Entries with an area, a mask or a timestep range (`diffusion.sampling.regions`) run on their area
while they are in range, blended per pixel, as ComfyUI's calc_cond_batch does.
Entries carrying a ControlNet (ComfyUI's `control` option, `diffusion.controlnet`) get its residuals added to
their rows of each network call while it is in range; rows without one share the call with zeros added.

A model's patches hook in where ComfyUI's sampler functions do: each pre-CFG patch (`DiffusionModel.pre_cfg`,
APG) turns the positive and negative estimates into new ones before guidance; each post-CFG patch
(`DiffusionModel.post_cfg`, RescaleCFG, PAG, ...) turns the guided estimate into a new one after it, and may run
the model again through its args' `estimate` (a `ConditioningEstimate`, ComfyUI's calc_cond_batch) with the
network changed for that call (a `NetworkChange`: PAG's identity attention, SLG's skipped blocks). A patch may
also have `for_run()`, the patch one sampling run uses (its per-run state: APG's momentum, SAG's attention map);
`needs_uncond`, true when it needs the negative estimate even at cfg 1 (ComfyUI's disable_cfg1_optimization);
and `observing(network, rows)`, a context entered around every main pass of the network, told the guidance rows
ComfyUI's attention hooks see as the uncond (SAG records their self-attention there). Knows nothing of nodes or
files.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Mapping, Sequence

import torch

from diffusion import controlnet, hooks
from diffusion.components import DiffusionModel
from diffusion.contracts import Conditioning, GuidanceBatch
from diffusion.patcher_api import WrapperExecutor
from diffusion.sampling import caching, editing, regions, run_seed
from diffusion.sampling.guidance import guidance_batch, input_rows

if TYPE_CHECKING:
    from diffusion.sampling.model_sampling import ModelSampling

# guidance_batch keeps the negative rows for any scale but 1: what a run that needs the negative
# estimate (a joint batch of several conditionings, a CFG++ sampler) asks for
_WITH_NEGATIVE_ROWS = 0.0


# Applied to a guider's result: (denoised, the cond and uncond estimates, sigma, x) -> denoised (RescaleCFG, ...)
PostCfg = Callable[[dict[str, Any]], torch.Tensor]
# Applied before guidance: (the cond and uncond estimates, sigma, x, cond_scale) -> (cond, uncond) (APG)
PreCfg = Callable[[dict[str, Any]], tuple[torch.Tensor, torch.Tensor]]
# A temporary change of the network module for some calls (attention processors swapped, blocks skipped): the
# context applies it and undoes it on exit, also on error.
NetworkChange = Callable[[Any], ContextManager[None]]


def patches_for_run(patches: tuple[Any, ...]) -> tuple[Any, ...]:
    """The patches one sampling run uses: each patch's `for_run()` where it has one (its state fresh per run)."""
    return tuple(patch.for_run() if hasattr(patch, "for_run") else patch for patch in patches)


def needs_uncond(model: DiffusionModel) -> bool:
    """Whether a patch of the model needs the negative estimate even at cfg 1 (SAG)."""
    return any(getattr(patch, "needs_uncond", False) for patch in model.pre_cfg + model.post_cfg)


@contextlib.contextmanager
def _observed(patches: tuple[Any, ...], network: Any, uncond_rows: slice) -> Iterator[None]:
    """Every patch's `observing` context around a main pass of the network."""
    with contextlib.ExitStack() as stack:
        for patch in patches:
            if hasattr(patch, "observing"):
                stack.enter_context(patch.observing(network, uncond_rows))
        yield


def _weighted_mean(rows: torch.Tensor, weights: list[float], batch: int) -> torch.Tensor:
    """ComfyUI's mean of several conditioning entries' estimates: weighted by their strengths."""
    groups = rows.split(batch)
    total = sum(weight * group for weight, group in zip(weights, groups))
    return total / (sum(weights) + 1e-37)


@dataclass(frozen=True)
class _Placement:
    """One entry's estimate in one side's blend: the rows of guidance entry `entry` (its text and inputs) run
    over `region` (None: the whole latents, weighted by `strength`)."""

    side: int
    entry: int
    region: regions.Region | None
    strength: float = 1.0


class ModelDenoiser:
    """The model's denoised estimates at one noise level, one per side: `sides` are spans (first entry, count) of
    the guidance batch's entries (default: its negatives, positives and unconditionals, those present), each side
    its entries' blend. The network runs once per embedding group; entries with an area, a mask or a timestep range
    (`diffusion.sampling.regions`) run as ComfyUI's calc_cond_batch runs them. Guiders combine the sides."""

    def __init__(self, model: DiffusionModel, network: Any, guidance: GuidanceBatch, batch: int,
                 model_sampling: "ModelSampling", before_call: Callable[[], None] | None = None,
                 sides: Sequence[tuple[int, int]] | None = None) -> None:
        self.model, self.network, self.guidance, self.batch = model, network, guidance, batch
        self.model_sampling = model_sampling
        self.inputs = model.sampling.network_inputs(guidance, batch, model.device, model.dtype)
        self.before_call = before_call
        self.weights = guidance.negative_weights + guidance.positive_weights + guidance.unconditional_weights
        self.sides = list(sides) if sides is not None else _default_sides(guidance)
        self.entry_labels = _entry_labels(guidance, sides)
        # packs' UNet function wrapper and APPLY_MODEL wrappers around each network call (ComfyUI's apply_model)
        self.function_wrapper, self.apply_wrappers = model.apply_model_wrappers()
        # the unconditional rows are the negative entries again, without the image
        self.entry_options = [*guidance.options, *guidance.options[:len(guidance.unconditional_weights)]]
        self.regional = any(regions.is_regional(options) for options in self.entry_options) \
            or hooks.has_default_entries(self.entry_options)
        self._placements: dict[tuple[int, ...], list[_Placement]] = {}
        # each entry's ControlNet (ComfyUI's `control` option), its hints prepared once per run
        self.controls = controlnet.entry_controls(self.entry_options, len(guidance.negative_weights))
        for control in self.controls:
            if control is not None:
                controlnet.check_family(control, model.family, model.sampling.family_title)
        self.hints = controlnet.HintCache(model.latent_format)
        # the entries' weight hooks (ComfyUI's HOOKS): entries with different hooks run in separate calls
        self.hooks = hooks.SamplingHooks.for_entries(model.network, model.lora_component, model.family,
                                                     self.entry_options, model_sampling.percent_to_sigma)
        if self.hooks is not None:
            self._network_output = self.hooks.wrapped_network_output(self._network_output, batch)
        # the run's wrappers of each network call (EasyCache), fresh per run
        self.wrappers = caching.network_wrappers(model, model_sampling)
        if self.wrappers:
            self._network_output = caching.wrapped_network_output(self._network_output, self.wrappers)

    def _network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                        embeddings: torch.Tensor, inputs: Mapping[str, Any], entries: Sequence[int],
                        sigma: torch.Tensor) -> torch.Tensor:
        """One network call for the rows of guidance `entries` (`batch` rows each), with the residuals of their
        ControlNets added where they have any."""
        controls = [self.controls[entry] for entry in entries]
        if any(control is not None for control in controls):
            inputs = {**inputs, **controlnet.network_kwargs(
                controls, self.batch, model_input, float(sigma.reshape(-1)[0]), timestep, embeddings, inputs,
                self.model_sampling.percent_to_sigma, self.hints,
                [self.entry_options[entry].get(controlnet.CONTROL_TEXT) for entry in entries])}
        with run_seed.network_call(tuple(self.entry_labels[entry] for entry in entries)):
            return self.model.sampling.network_output(network, model_input, timestep, embeddings, inputs).float()

    def estimates(self, x: torch.Tensor, sigma: torch.Tensor, change: NetworkChange | None = None
                  ) -> list[torch.Tensor]:
        """The denoised estimate [batch, C, H, W] of every side for `x` ([batch, C, H, W] at `sigma`, [batch]),
        with the model's network module changed by `change` for these calls when given."""
        caching.new_pass(self.wrappers)
        with contextlib.nullcontext() if change is None else change(self.model.network):
            if self.regional:
                return self._regional(x, sigma)
            rows, batch = self._rows(x, sigma), self.batch
            return [_weighted_mean(rows[first * batch:(first + count) * batch], self.weights[first:first + count],
                                   batch) for first, count in self.sides]

    def _network_rows(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        copies = self.guidance.rows // self.batch
        x_rows = torch.cat([x] * copies) if copies > 1 else x
        sigma_rows = torch.cat([sigma] * copies) if copies > 1 else sigma
        model_input = self.model_sampling.calculate_input(sigma_rows, x_rows).to(self.model.dtype)
        return x_rows, sigma_rows, model_input, self.model_sampling.timestep(sigma_rows).float()

    def _rows(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x_rows, sigma_rows, model_input, timestep = self._network_rows(x, sigma)
        outputs = []
        for group in self.guidance.groups:
            if self.before_call is not None:
                self.before_call()
            rows = slice(group.start, group.stop)
            concat = self.guidance.concat
            network = self.network if concat is None else editing.ExtraChannels(self.network, concat[rows])
            outputs.append(self._denoised(
                network, x_rows[rows], sigma_rows[rows], model_input[rows], timestep[rows], group.embeddings,
                input_rows(self.inputs, rows, self.guidance.rows),
                range(group.start // self.batch, group.stop // self.batch), sigma))
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]

    def _denoised(self, network: Any, x: torch.Tensor, sigma_rows: torch.Tensor, model_input: torch.Tensor,
                  timestep: torch.Tensor, embeddings: torch.Tensor, inputs: Mapping[str, Any], entries: Sequence[int],
                  sigma: torch.Tensor) -> torch.Tensor:
        """The denoised estimate of one network call's rows `x` at `sigma_rows` (their `model_input` and
        `timestep` prepared), inside the packs' UNet function wrapper and APPLY_MODEL wrappers when the model has
        any (ComfyUI's apply_model)."""
        if self.function_wrapper is None and not self.apply_wrappers:
            output = self._network_output(network, model_input, timestep, embeddings, inputs, entries, sigma)
            return self.model_sampling.calculate_denoised(sigma_rows, output, x)
        cond_or_uncond = [self.entry_labels[entry] for entry in entries]

        def base(x: torch.Tensor, t: torch.Tensor, c_concat: Any = None, c_crossattn: torch.Tensor | None = None,
                 control: Any = None, transformer_options: Any = None, **kwargs: Any) -> torch.Tensor:
            model_input = self.model_sampling.calculate_input(t, x).to(self.model.dtype)
            text = embeddings if c_crossattn is None else c_crossattn
            output = self._network_output(network, model_input, self.model_sampling.timestep(t).float(), text, inputs,
                                          entries, sigma)
            return self.model_sampling.calculate_denoised(t, output, x)

        def apply_model(x: torch.Tensor, t: torch.Tensor, **c: Any) -> torch.Tensor:
            return WrapperExecutor(base, self.apply_wrappers)(
                x, t, c.pop("c_concat", None), c.pop("c_crossattn", None), c.pop("control", None),
                c.pop("transformer_options", {}), **c)

        transformer_options = {**self.model.model_options.get("transformer_options", {}),
                               "sample_sigmas": run_seed.current_sigmas(), "sigmas": sigma_rows,
                               "cond_or_uncond": cond_or_uncond}
        c = {"c_crossattn": embeddings, "transformer_options": transformer_options}
        if self.function_wrapper is None:
            return apply_model(x, sigma_rows, **c)
        return self.function_wrapper(apply_model, {"input": x, "timestep": sigma_rows, "c": c,
                                                   "cond_or_uncond": cond_or_uncond})

    def _placements_for(self, shape: torch.Size) -> list[_Placement]:
        """Every side's placements on latents of `shape`: its entries, then the twins of other sides' area entries
        (`regions.area_twin`), in ComfyUI's order."""
        key = tuple(shape)
        if key in self._placements:
            return self._placements[key]
        height, width = shape[-2:]
        entry_regions = [regions.region(options, shape, self.model_sampling) if regions.is_regional(options) else None
                         for options in self.entry_options]
        entry_areas = [regions.resolved_areas(options, height, width)[0] for options in self.entry_options]
        sides = [[(_Placement(side, entry, entry_regions[entry], self.weights[entry]), entry_areas[entry])
                  for entry in range(first, first + count)] for side, (first, count) in enumerate(self.sides)]
        for side, placed in enumerate(sides):
            for placement, area in placed:
                if area is None:
                    continue
                for other, other_placed in enumerate(sides):
                    twin = None if other == side else regions.area_twin(area, [a for _, a in other_placed])
                    if twin is not None:
                        source = other_placed[twin][0]
                        other_placed.append((dataclasses.replace(placement, side=other, entry=source.entry), area))
        self._placements[key] = [placement for placed in sides for placement, _ in placed]
        return self._placements[key]

    def _group_of(self, entry: int) -> int:
        row = entry * self.batch
        return next(index for index, group in enumerate(self.guidance.groups) if group.start <= row < group.stop)

    def _regional(self, x: torch.Tensor, sigma: torch.Tensor) -> list[torch.Tensor]:
        """ComfyUI's calc_cond_batch: the active placements, batched by embedding group and area, blended into
        each side with their weights and divided by the summed weights."""
        batch = self.batch
        x_rows, sigma_rows, model_input, timestep = self._network_rows(x, sigma)
        level = float(sigma.reshape(-1)[0])
        calls: dict[tuple[int, Any], list[_Placement]] = {}
        for placement in hooks.with_default_weights(self._placements_for(x.shape), self.entry_options, x.shape, level):
            if placement.region is None or placement.region.active(level):
                area = None if placement.region is None else placement.region.area
                calls.setdefault((self._group_of(placement.entry), area), []).append(placement)
        totals = [torch.zeros_like(x, dtype=torch.float32) for _ in self.sides]
        counts = [torch.full_like(x, 1e-37, dtype=torch.float32) for _ in self.sides]
        for (group_index, _), members in calls.items():
            if self.before_call is not None:
                self.before_call()
            group = self.guidance.groups[group_index]
            index = torch.cat([torch.arange(p.entry * batch, (p.entry + 1) * batch) for p in members])
            crop = members[0].region.crop if members[0].region is not None else _whole
            concat = self.guidance.concat
            network = self.network if concat is None else editing.ExtraChannels(
                self.network, crop(concat[index.to(concat.device)]))
            device_index = index.to(model_input.device)
            denoised = self._denoised(
                network, crop(x_rows[device_index]), sigma_rows[device_index], crop(model_input[device_index]),
                timestep[device_index], group.embeddings[(index - group.start).to(group.embeddings.device)],
                input_rows(self.inputs, device_index, self.guidance.rows), [p.entry for p in members], sigma)
            for placement, estimate in zip(members, denoised.split(batch)):
                weight = (placement.strength if placement.region is None
                          else placement.region.weight.to(estimate.device))
                crop(totals[placement.side]).add_(estimate * weight)
                crop(counts[placement.side]).add_(weight)
        return [total / count for total, count in zip(totals, counts)]


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _entry_labels(guidance: GuidanceBatch, sides: Sequence[tuple[int, int]] | None) -> list[int]:
    """ComfyUI's cond_or_uncond number of each guidance entry: 1 for the negatives, 0 for the positives, 2 for the
    unconditional rows; with `sides` given (a joint batch), each side's conditionings numbered in their order."""
    if sides is None:
        counts = (len(guidance.negative_weights), len(guidance.positive_weights), len(guidance.unconditional_weights))
        return [label for label, count in zip((1, 0, 2), counts) for _ in range(count)]
    entries = len(guidance.negative_weights) + len(guidance.positive_weights) + len(guidance.unconditional_weights)
    labels = [0] * max(entries, sum(count for _, count in sides))
    for side, (first, count) in enumerate(sides):
        labels[first:first + count] = [side] * count
    return labels


def _default_sides(guidance: GuidanceBatch) -> list[tuple[int, int]]:
    """Spans of the negatives, positives and unconditionals that the guidance batch has."""
    sides, first = [], 0
    for weights in (guidance.negative_weights, guidance.positive_weights, guidance.unconditional_weights):
        if weights:
            sides.append((first, len(weights)))
            first += len(weights)
    return sides


class ConditioningEstimate:
    """ComfyUI's calc_cond_batch(model, [conditioning], x, sigma) for post-CFG patches that run the model again
    (PAG, SAG, SLG): the denoised estimate [batch, C, H, W] of one CONDITIONING alone (its entries' weighted mean,
    no guidance, no image guidance), with the network changed for the call when asked. Each conditioning's rows
    are prepared once per run."""

    def __init__(self, model: DiffusionModel, network: Any, batch: int, edit: editing.EditInputs | None,
                 model_sampling: "ModelSampling", before_call: Callable[[], None] | None = None) -> None:
        self.model, self.network, self.batch, self.model_sampling = model, network, batch, model_sampling
        self.edit = None if edit is None else dataclasses.replace(edit, image_cfg=None)
        self.before_call = before_call
        self._prepared: dict[int, tuple[Conditioning, ModelDenoiser]] = {}

    def __call__(self, conditioning: Conditioning, x: torch.Tensor, sigma: torch.Tensor,
                 change: NetworkChange | None = None) -> torch.Tensor:
        prepared = self._prepared.get(id(conditioning))
        if prepared is None:
            model = self.model
            guidance = guidance_batch(conditioning, conditioning, self.batch, 1.0, model.device, model.dtype,
                                      self.edit)
            # (the conditioning is kept with its rows, so that its id stays its own while the run lasts)
            prepared = (conditioning, ModelDenoiser(model, self.network, guidance, self.batch, self.model_sampling,
                                                    self.before_call))
            self._prepared[id(conditioning)] = prepared
        return prepared[1].estimates(x, sigma, change)[0]


@dataclass(eq=False)
class CfgDenoiser:
    """A `Denoiser`: the model's pre-CFG patches on the positive and negative estimates of a `ModelDenoiser`'s
    rows, classifier-free guidance (InstructPix2Pix's three-way image guidance when the guidance batch has
    unconditional rows), then its post-CFG patches. `cond` and `uncond` are the positive and negative
    CONDITIONING (the negative None when its rows are skipped at cfg 1), which post-CFG patches may `estimate`
    again."""

    rows: ModelDenoiser
    cfg: float
    post_cfg: tuple[PostCfg, ...] = ()
    pre_cfg: tuple[PreCfg, ...] = ()
    cond: Conditioning | None = None
    uncond: Conditioning | None = None
    estimate: ConditioningEstimate | None = None
    uncond_denoised: torch.Tensor | None = field(default=None, init=False)

    @property
    def model_sampling(self) -> "ModelSampling":
        return self.rows.model_sampling

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        guidance, batch = self.rows.guidance, self.rows.batch
        negative_rows = len(guidance.negative_weights) * batch
        with _observed(self.post_cfg, self.rows.model.network, slice(0, min(batch, negative_rows))):
            estimates = self.rows.estimates(x, sigma)
        if not guidance.uses_negative:  # ComfyUI's cfg1 optimization: the skipped negative estimate counts as zeros
            positive, negative = apply_pre_cfg(self.pre_cfg, estimates[0], torch.zeros_like(estimates[0]), sigma, x,
                                               self.cfg)
            self.uncond_denoised = None
            return self._post(positive, positive, negative, sigma, x)
        negative, positive = estimates[:2]
        positive, negative = apply_pre_cfg(self.pre_cfg, positive, negative, sigma, x, self.cfg)
        self.uncond_denoised = negative
        if guidance.image_cfg is None:
            return self._post(negative + (positive - negative) * self.cfg, positive, negative, sigma, x)
        unconditional = estimates[2]
        guided = unconditional + self.cfg * (positive - negative) + guidance.image_cfg * (negative - unconditional)
        return self._post(guided, positive, negative, sigma, x)

    def _post(self, denoised: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, sigma: torch.Tensor,
              x: torch.Tensor) -> torch.Tensor:
        uncond_conditioning = self.uncond if self.rows.guidance.uses_negative else None
        return apply_post_cfg(self.post_cfg, denoised, cond, uncond, sigma, x, self.cfg, self.model_sampling,
                              model_calls(self.cond, uncond_conditioning, self.estimate))


def apply_pre_cfg(patches: tuple[PreCfg, ...], cond: torch.Tensor, uncond: torch.Tensor, sigma: torch.Tensor,
                  x: torch.Tensor, cond_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive and negative estimates through a model's pre-CFG patches in order, before the guidance scale
    `cond_scale` is applied between them."""
    for patch in patches:
        cond, uncond = patch({"cond_denoised": cond, "uncond_denoised": uncond, "sigma": sigma, "input": x,
                              "cond_scale": cond_scale})
    return cond, uncond


def apply_post_cfg(patches: tuple[PostCfg, ...], denoised: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
                   sigma: torch.Tensor, x: torch.Tensor, cond_scale: float, model_sampling: "ModelSampling",
                   calls: Mapping[str, Any] | None = None) -> torch.Tensor:
    """`denoised` through a model's post-CFG patches in order; `cond` and `uncond` are the two estimates the
    guidance scale `cond_scale` was applied between; `calls` (`model_calls`) reach the patches as they are."""
    for patch in patches:
        denoised = patch({"denoised": denoised, "cond_denoised": cond, "uncond_denoised": uncond,
                          "sigma": sigma, "input": x, "cond_scale": cond_scale, "model_sampling": model_sampling,
                          **(calls or {})})
    return denoised


def model_calls(cond: Conditioning | None, uncond: Conditioning | None,
                estimate: ConditioningEstimate | None) -> dict[str, Any]:
    """What a post-CFG patch needs to run the model again: the `cond` and `uncond` CONDITIONING guidance was
    applied between (None: skipped) and the `estimate` that evaluates one of them (ComfyUI's args of the same
    names, `estimate` standing for its model and calc_cond_batch)."""
    return {"cond": cond, "uncond": uncond, "estimate": estimate}


def replaces_cfg(patch: PostCfg) -> bool:
    """Whether a post-CFG patch stands for ComfyUI's `sampler_cfg_function` (RescaleCFG): it recomputes the
    guided estimate from the two estimates, so it comes first in a model's patches, and guiders that skip
    ComfyUI's cfg function (PerpNeg) skip it too."""
    return bool(getattr(patch, "replaces_cfg", False))


@dataclass(frozen=True, eq=False)
class CFGGuider:
    """GUIDER: classifier-free guidance of `positive` against `negative` at scale `cfg` (ComfyUI's CFGGuider)."""

    model: DiffusionModel
    positive: Conditioning
    negative: Conditioning
    cfg: float
    image_cfg: float | None = None  # InstructPix2Pix's image guidance: three-way (KSamplerDualCFG)

    def denoiser(self, network: Any, batch: int, edit: editing.EditInputs | None, model_sampling: "ModelSampling",
                 before_call: Callable[[], None] | None = None, cfg1_optimization: bool = True) -> CfgDenoiser:
        """The denoiser of one sampling run of `batch` latents: `network` is the model's network as the run calls
        it (LoRAs and speed-ups applied), `edit` the editing inputs (InstructPix2Pix's image guidance among them),
        `before_call` runs before every network call (interrupts, honoured within a step). With
        `cfg1_optimization` the negative is skipped at scale 1 (the CFG++ samplers turn it off: they step with it,
        and so does a patch that `needs_uncond`). The model's patches are those of one run (`patches_for_run`)."""
        model = self.model
        scale = self.cfg if cfg1_optimization and not needs_uncond(model) else _WITH_NEGATIVE_ROWS
        guidance = guidance_batch(self.positive, self.negative, batch, scale, model.device, model.dtype, edit)
        rows = ModelDenoiser(model, network, guidance, batch, model_sampling, before_call)
        return CfgDenoiser(rows, self.cfg, patches_for_run(model.post_cfg), patches_for_run(model.pre_cfg),
                           self.positive, self.negative,
                           ConditioningEstimate(model, network, batch, edit, model_sampling, before_call))


def basic_guider(model: DiffusionModel, conditioning: Conditioning) -> CFGGuider:
    """ComfyUI's BasicGuider: the conditioning alone, no negative (cfg 1)."""
    return CFGGuider(model, conditioning, conditioning, 1.0)


def _require_entries(conditionings: Mapping[str, Conditioning]) -> None:
    for input_name, conditioning in conditionings.items():
        if not conditioning:
            raise ValueError(f"{input_name}: empty conditioning")


class JointEstimates:
    """The denoised estimates of several conditionings at one noise level, from one guidance batch (one network
    call where the token lengths allow, as ComfyUI's calc_cond_batch batches them). A conditioning left out
    (None) is estimated as zeros, as ComfyUI leaves a skipped one."""

    def __init__(self, model: DiffusionModel, network: Any, conditionings: Sequence[Conditioning | None], batch: int,
                 edit: editing.EditInputs | None, model_sampling: "ModelSampling",
                 before_call: Callable[[], None] | None = None) -> None:
        self.conditionings = list(conditionings)
        *others, last = [conditioning for conditioning in conditionings if conditioning is not None]
        joint_others = [entry for conditioning in others for entry in conditioning]
        # rows: the other conditionings' entries as the "negative" side, in order, then the last one's
        guidance = guidance_batch(last, joint_others or last, batch, _WITH_NEGATIVE_ROWS if others else 1.0,
                                  model.device, model.dtype, edit)
        present = [conditioning for conditioning in self.conditionings if conditioning is not None]
        firsts = [sum(len(conditioning) for conditioning in present[:index]) for index in range(len(present))]
        self.rows = ModelDenoiser(model, network, guidance, batch, model_sampling, before_call,
                                  [(first, len(conditioning)) for first, conditioning in zip(firsts, present)])
        self.estimate = ConditioningEstimate(model, network, batch, edit, model_sampling, before_call)
        # the rows of the second conditioning's first entry: what ComfyUI's attention hooks see as the uncond
        first_entries = [sum(len(c) for c in self.conditionings[:index] if c is not None)
                         for index in range(len(self.conditionings))]
        second = self.conditionings[1] if len(self.conditionings) > 1 else None
        self.uncond_rows = slice(0, 0) if second is None else slice(first_entries[1] * batch,
                                                                    (first_entries[1] + 1) * batch)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, observers: tuple[Any, ...] = ()) -> list[torch.Tensor]:
        """One estimate [batch, C, H, W] per conditioning, in their order; `observers`: patches whose `observing`
        context the main pass runs in."""
        with _observed(observers, self.rows.model.network, self.uncond_rows):
            estimates = iter(self.rows.estimates(x, sigma))
        return [torch.zeros_like(x) if conditioning is None else next(estimates) for conditioning in self.conditionings]


@dataclass(eq=False)
class DualCfgDenoiser:
    """A `Denoiser` guiding by two scales (ComfyUI's Guider_DualCFG). Regular: cond2 against the negative at
    `cfg_cond2_negative` (the model's post-CFG patches applied there), plus cond1's difference from cond2 at
    `cfg_conds`. Nested: cond1 against cond2 at `cfg_conds` (patches applied there), that result against the
    negative at `cfg_cond2_negative`. No pre-CFG patches: ComfyUI's Guider_DualCFG does not run them."""

    estimates: JointEstimates  # negative, cond2, cond1
    cfg_conds: float
    cfg_cond2_negative: float
    nested: bool
    post_cfg: tuple[PostCfg, ...] = ()
    uncond_denoised: torch.Tensor | None = field(default=None, init=False)

    @property
    def model_sampling(self) -> "ModelSampling":
        return self.estimates.rows.model_sampling

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        negative, cond2, cond1 = self.estimates(x, sigma, self.post_cfg)
        negative_conditioning, cond2_conditioning, cond1_conditioning = self.estimates.conditionings
        estimate = self.estimates.estimate
        if self.nested:
            self.uncond_denoised = cond2
            text = apply_post_cfg(self.post_cfg, cond2 + (cond1 - cond2) * self.cfg_conds, cond1, cond2, sigma, x,
                                  self.cfg_conds, self.model_sampling,
                                  model_calls(cond1_conditioning, cond2_conditioning, estimate))
            return negative + self.cfg_cond2_negative * (text - negative)
        self.uncond_denoised = negative
        guided = apply_post_cfg(self.post_cfg, negative + (cond2 - negative) * self.cfg_cond2_negative, cond2,
                                negative, sigma, x, self.cfg_cond2_negative, self.model_sampling,
                                model_calls(cond2_conditioning, negative_conditioning, estimate))
        return guided + (cond1 - cond2) * self.cfg_conds


@dataclass(frozen=True, eq=False)
class DualCFGGuider:
    """GUIDER: ComfyUI's DualCFGGuider, two conditionings and a negative with a scale each (`DualCfgDenoiser`).
    Regular style skips the negative when `cfg_cond2_negative` is 1, and cond2 too when `cfg_conds` is also 1
    (ComfyUI's cfg1 optimization; a skipped estimate counts as zeros); nested style computes all three."""

    model: DiffusionModel
    cond1: Conditioning
    cond2: Conditioning
    negative: Conditioning
    cfg_conds: float
    cfg_cond2_negative: float
    nested: bool = False
    image_cfg: float | None = field(default=None, init=False)  # no InstructPix2Pix three-way guidance

    def __post_init__(self) -> None:
        _require_entries({"cond1": self.cond1, "cond2": self.cond2, "negative": self.negative})

    def denoiser(self, network: Any, batch: int, edit: editing.EditInputs | None, model_sampling: "ModelSampling",
                 before_call: Callable[[], None] | None = None, cfg1_optimization: bool = True) -> DualCfgDenoiser:
        """As `CFGGuider.denoiser`."""
        negative, cond2 = self.negative, self.cond2
        cfg1_optimization = cfg1_optimization and not needs_uncond(self.model)
        if cfg1_optimization and not self.nested and math.isclose(self.cfg_cond2_negative, 1.0):
            negative = None
            if math.isclose(self.cfg_conds, 1.0):
                cond2 = None
        estimates = JointEstimates(self.model, network, [negative, cond2, self.cond1], batch, edit, model_sampling,
                                   before_call)
        return DualCfgDenoiser(estimates, self.cfg_conds, self.cfg_cond2_negative, self.nested,
                               patches_for_run(self.model.post_cfg))


def perp_neg(positive: torch.Tensor, negative: torch.Tensor, empty: torch.Tensor, neg_scale: float,
             cfg: float) -> torch.Tensor:
    """Perp-Neg guidance (Armandpour et al. 2023) on denoised estimates: the empty prompt's estimate moved `cfg`
    times along the positive direction, minus `neg_scale` times the part of the negative direction perpendicular
    to it (projected over the whole batch, as ComfyUI does)."""
    towards_positive = positive - empty
    towards_negative = negative - empty
    projection = (towards_negative * towards_positive).sum() / torch.norm(towards_positive) ** 2
    perpendicular = towards_negative - projection * towards_positive
    return empty + cfg * (towards_positive - perpendicular * neg_scale)


@dataclass(eq=False)
class PerpNegDenoiser:
    """A `Denoiser` of Perp-Neg guidance (`perp_neg`) after the model's pre-CFG patches on the positive and
    negative estimates, then its post-CFG patches except one replacing the cfg function, which ComfyUI's
    Guider_PerpNeg never calls."""

    estimates: JointEstimates  # positive, negative, empty
    cfg: float
    neg_scale: float
    post_cfg: tuple[PostCfg, ...] = ()
    pre_cfg: tuple[PreCfg, ...] = ()
    uncond_denoised: torch.Tensor | None = field(default=None, init=False)

    @property
    def model_sampling(self) -> "ModelSampling":
        return self.estimates.rows.model_sampling

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        positive, negative, empty = self.estimates(x, sigma, self.post_cfg)
        positive, negative = apply_pre_cfg(self.pre_cfg, positive, negative, sigma, x, self.cfg)
        self.uncond_denoised = negative
        guided = perp_neg(positive, negative, empty, self.neg_scale, self.cfg)
        patches = tuple(patch for patch in self.post_cfg if not replaces_cfg(patch))
        positive_conditioning, negative_conditioning, _ = self.estimates.conditionings
        return apply_post_cfg(patches, guided, positive, negative, sigma, x, self.cfg, self.model_sampling,
                              model_calls(positive_conditioning, negative_conditioning, self.estimates.estimate))


@dataclass(frozen=True, eq=False)
class PerpNegGuider:
    """GUIDER: ComfyUI's PerpNegGuider (`PerpNegDenoiser`). The negative is skipped when `neg_scale` is 0, and the
    empty conditioning too when `cfg` is also 1 (a skipped estimate counts as zeros)."""

    model: DiffusionModel
    positive: Conditioning
    negative: Conditioning
    empty_conditioning: Conditioning
    cfg: float
    neg_scale: float
    image_cfg: float | None = field(default=None, init=False)  # no InstructPix2Pix three-way guidance

    def __post_init__(self) -> None:
        _require_entries({"positive": self.positive, "negative": self.negative,
                          "empty_conditioning": self.empty_conditioning})

    def denoiser(self, network: Any, batch: int, edit: editing.EditInputs | None, model_sampling: "ModelSampling",
                 before_call: Callable[[], None] | None = None, cfg1_optimization: bool = True) -> PerpNegDenoiser:
        """As `CFGGuider.denoiser`."""
        negative, empty = self.negative, self.empty_conditioning
        cfg1_optimization = cfg1_optimization and not needs_uncond(self.model)
        if cfg1_optimization and math.isclose(self.neg_scale, 0.0):
            negative = None
            if math.isclose(self.cfg, 1.0):
                empty = None
        estimates = JointEstimates(self.model, network, [self.positive, negative, empty], batch, edit,
                                   model_sampling, before_call)
        return PerpNegDenoiser(estimates, self.cfg, self.neg_scale, patches_for_run(self.model.post_cfg),
                               patches_for_run(self.model.pre_cfg))
