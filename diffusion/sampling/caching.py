"""Step caches of a MODEL: EasyCache and LazyCache, as ComfyUI's nodes of those names compute them. Both skip work
on steps where the output is predicted to change little from the last computed step, and reuse instead the
change (output minus input) that step made.

The prediction (the same for both): the mean absolute change of the input since the last computed step, times the
ratio of output change to input change measured between the last two computed steps, over the mean absolute
output of the last computed step, is added to a running sum; while that sum stays under `reuse_threshold` the
step is skipped (the sum kept), otherwise the step is computed and the sum restarts from 0. Changes are measured
on every 8th latent pixel in height and width. Steps are skipped only at noise levels from `start_percent`'s sigma
down to (not including) `end_percent`'s; from that one on every step runs and nothing is recorded.

- `EasyCache` wraps each network call (ComfyUI's diffusion-model wrapper): its input is the network's input (the
  latents scaled by the model's sampling) and its output the raw network output, cached per guidance entry (the
  rows of one conditioning entry, ComfyUI's cond uuid). The rows of the first entry in the span decide for the
  whole step: the other calls of that step reuse their own cached change too. Before the span only each entry's
  change is kept. The estimates a guidance patch makes again (PAG, SAG, SLG) keep a cache of their own.
- `LazyCache` wraps the guided prediction (ComfyUI's predict-noise wrapper): the sampler's latents in, the guided
  denoised estimate out, one cache for all rows; its changes are recorded on every computed step, also before
  `start_percent`.

A MODEL carries these as `DiffusionModel.sampling_wrappers`; each sampling run starts from fresh state
(`network_wrappers`, `wrapped_prediction`). Where ComfyUI resets a cache whose tensors change shape, dtype or
device mid-run, the cache here restarts empty (ComfyUI's reset leaves a transformation rate of 0, after which
every later step of the run would be skipped). Knows nothing of nodes.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

logger = logging.getLogger(__name__)

SUBSAMPLE = 8  # changes are measured on every 8th latent pixel in height and width (ComfyUI's subsample_factor)


@dataclass(frozen=True)
class CacheSettings:
    """What the nodes set: the threshold of the running sum of predicted change rates under which a step is
    skipped, and the span of the run (fractions of the model's schedule) in which steps may be skipped."""

    reuse_threshold: float
    start_percent: float
    end_percent: float
    verbose: bool = False


def _subsampled(tensor: torch.Tensor) -> torch.Tensor:
    return tensor[..., ::SUBSAMPLE, ::SUBSAMPLE]


def _mean_change(new: torch.Tensor, old: torch.Tensor) -> float:
    return float((new.float() - old.float()).abs().mean())


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator as tensors divide: infinite (or NaN for 0 / 0) rather than an error at 0."""
    if denominator:
        return numerator / denominator
    return math.copysign(math.inf, numerator) if numerator else math.nan


class _ChangePredictor:
    """The state both caches share within one run: the sigmas of the span, the last computed step's subsampled
    input and output and mean absolute output, the output/input change ratio and the running sum."""

    name = ""

    def __init__(self, settings: CacheSettings, model_sampling: Any) -> None:
        self.settings = settings
        self.start_sigma = float(model_sampling.percent_to_sigma(settings.start_percent))
        self.end_sigma = float(model_sampling.percent_to_sigma(settings.end_percent))
        self.skipped = 0
        self.restarted = False
        self._restart()
        logger.info("%s enabled - threshold: %s, start_percent: %s, end_percent: %s", self.name,
                    settings.reuse_threshold, settings.start_percent, settings.end_percent)

    def _restart(self) -> None:
        self.input_prev: torch.Tensor | None = None
        self.output_prev: torch.Tensor | None = None
        self.output_prev_norm: float | None = None
        self.transformation_rate: float | None = None
        self.cumulative_change = 0.0
        self.metadata: tuple | None = None

    def _past_end(self, level: float) -> bool:
        return not level > self.end_sigma

    def _in_span(self, level: float) -> bool:
        return level <= self.start_sigma

    def _note_tensor(self, x: torch.Tensor, metadata: tuple) -> None:
        """Restart the cache when the tensors change shape, dtype or device."""
        if self.metadata is not None and metadata != self.metadata:
            # (once per run: regional conditioning changes the shape on every call)
            logger.log(logging.DEBUG if self.restarted else logging.WARNING,
                       "%s - tensor shape, dtype or device changed, restarting the cache", self.name)
            self.restarted = True
            self._restart()
        self.metadata = metadata

    def _decide_skip(self, input_change: float) -> bool:
        """Add the predicted output change rate to the running sum: whether the step is skipped (the sum kept) or
        computed (the sum restarted). Undecided (computed) until an output norm and a rate are known."""
        if self.output_prev_norm is None or self.transformation_rate is None:
            return False
        self.cumulative_change += _ratio(self.transformation_rate * input_change, self.output_prev_norm)
        skip = self.cumulative_change < self.settings.reuse_threshold
        if self.settings.verbose:
            logger.info("%s [verbose] - %s step; cumulative_change_rate: %s, reuse_threshold: %s", self.name,
                        "skipping" if skip else "NOT skipping", self.cumulative_change, self.settings.reuse_threshold)
        if not skip:
            self.cumulative_change = 0.0
        return skip

    def _record(self, x_rows: torch.Tensor, output_rows: torch.Tensor, output: torch.Tensor,
                input_change: float | None) -> None:
        """After a computed step: the output/input change ratio (when the input change is known), then this
        step's subsampled input and output and mean absolute output."""
        if self.output_prev is not None and self.output_prev_norm is not None:
            output_change = _mean_change(_subsampled(output_rows), self.output_prev)
            if self.settings.verbose:
                logger.info("%s [verbose] - output_change_rate: %s", self.name,
                            _ratio(output_change, self.output_prev_norm))
            if input_change is not None:
                self.transformation_rate = _ratio(output_change, input_change)
        self.input_prev = _subsampled(x_rows).clone()
        self.output_prev = _subsampled(output_rows).clone()
        self.output_prev_norm = float(output.float().abs().mean())

    def _log_skip(self) -> None:
        self.skipped += 1
        if self.settings.verbose:
            logger.info("%s [verbose] - %d step(s) skipped so far", self.name, self.skipped)


class EasyCacheRun(_ChangePredictor):
    """One sampling run's EasyCache: wraps each network call of the run (`network_call`); `new_pass` marks the
    start of each estimate (ComfyUI's calc_cond_batch), where the step's skip decision is cleared."""

    name = "EasyCache"

    def _restart(self) -> None:
        super()._restart()
        self.first_entry: Any = None
        self.skip_pass = False
        self.change_of: dict[Any, torch.Tensor] = {}

    def new_pass(self) -> None:
        self.skip_pass = False

    def network_call(self, call: Callable[[], torch.Tensor], model_input: torch.Tensor, sigma: torch.Tensor,
                     entries: Sequence[Any]) -> torch.Tensor:
        """The network output for `model_input` at `sigma`, whose rows are those of the guidance `entries` in
        order (equal shares): `call()`'s, or the input plus each entry's cached change on a skipped step."""
        level = float(sigma.reshape(-1)[0])
        if self._past_end(level):
            return call()
        entries = list(entries)
        input_change = None
        if self._in_span(level):
            self._note_tensor(model_input, (model_input.device, model_input.dtype, tuple(model_input.shape[1:])))
            if self.skip_pass:
                reused = self._reused(model_input, entries)
                if reused is not None:
                    return reused
            if self.first_entry is None:
                self.first_entry = entries[0]
            if self.first_entry in entries:
                if self.input_prev is not None:
                    input_change = _mean_change(_subsampled(self._first_rows(model_input, entries)), self.input_prev)
                    if self._decide_skip(input_change):
                        reused = self._reused(model_input, entries)
                        if reused is not None:
                            self.skip_pass = True
                            return reused
        output = call()
        leading = self.first_entry is not None and self.first_entry in entries
        if leading:
            self._record(self._first_rows(model_input, entries), self._first_rows(output, entries), output,
                         input_change)
        change = output - model_input
        for entry, rows in zip(entries, change.chunk(len(entries))):
            self.change_of[entry] = rows
        return output

    def _first_rows(self, tensor: torch.Tensor, entries: list[Any]) -> torch.Tensor:
        return tensor.chunk(len(entries))[entries.index(self.first_entry)]

    def _reused(self, model_input: torch.Tensor, entries: list[Any]) -> torch.Tensor | None:
        """The input plus each entry's cached change; None (compute) where an entry has no change cached for rows
        of this shape (an entry new to the run: ComfyUI fails there)."""
        rows = model_input.chunk(len(entries))
        changes = [self.change_of.get(entry) for entry in entries]
        if any(change is None or change.shape != row.shape for change, row in zip(changes, rows)):
            return None
        if self.first_entry in entries:
            self._log_skip()
        return torch.cat([row + change.to(row.device) for row, change in zip(rows, changes)])


@dataclass(frozen=True)
class EasyCache:
    """MODEL wrapper: EasyCache (see the module docstring) around each network call of a run."""

    settings: CacheSettings

    def for_run(self, model_sampling: Any) -> EasyCacheRun:
        return EasyCacheRun(self.settings, model_sampling)


class LazyCacheRun(_ChangePredictor):
    """One sampling run's LazyCache: a `Denoiser` around the run's guided denoiser."""

    name = "LazyCache"

    def __init__(self, settings: CacheSettings, inner: Any) -> None:
        self.inner = inner
        super().__init__(settings, inner.model_sampling)

    def _restart(self) -> None:
        super()._restart()
        self.change: torch.Tensor | None = None

    @property
    def model_sampling(self) -> Any:
        return self.inner.model_sampling

    @property
    def uncond_denoised(self) -> torch.Tensor | None:
        return self.inner.uncond_denoised

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        level = float(sigma.reshape(-1)[0])
        if self._past_end(level):
            return self.inner(x, sigma)
        input_change = None
        if self._in_span(level):
            self._note_tensor(x, (x.device, x.dtype, tuple(x.shape)))
            if self.input_prev is not None:
                input_change = _mean_change(_subsampled(x), self.input_prev)
                if self._decide_skip(input_change) and self.change is not None:
                    self._log_skip()
                    return x + self.change.to(x.device)
        output = self.inner(x, sigma)
        self._record(x, output, output, input_change)
        self.change = output - x
        return output


@dataclass(frozen=True)
class LazyCache:
    """MODEL wrapper: LazyCache (see the module docstring) around the guided prediction of a run."""

    settings: CacheSettings

    def for_run(self, inner: Any) -> LazyCacheRun:
        return LazyCacheRun(self.settings, inner)


def network_wrappers(model: Any, model_sampling: Any) -> tuple[EasyCacheRun, ...]:
    """The wrappers of each network call for one run of `model` (fresh state)."""
    return tuple(wrapper.for_run(model_sampling) for wrapper in getattr(model, "sampling_wrappers", ())
                 if isinstance(wrapper, EasyCache))


def wrapped_network_output(network_output: Callable[..., torch.Tensor], wrappers: tuple[EasyCacheRun, ...]
                           ) -> Callable[..., torch.Tensor]:
    """`ModelDenoiser._network_output` (network, model_input, timestep, embeddings, inputs, entries, sigma) with
    each network call going through `wrappers`, the first outermost."""

    def wrapped(network: Any, model_input: torch.Tensor, timestep: torch.Tensor, embeddings: Any, inputs: Any,
                entries: Sequence[int], sigma: torch.Tensor) -> torch.Tensor:
        def call() -> torch.Tensor:
            return network_output(network, model_input, timestep, embeddings, inputs, entries, sigma)

        for wrapper in reversed(wrappers):
            call = _around(wrapper, call, model_input, sigma, list(entries))
        return call()

    return wrapped


def _around(wrapper: EasyCacheRun, call: Callable[[], torch.Tensor], model_input: torch.Tensor, sigma: torch.Tensor,
            entries: list[int]) -> Callable[[], torch.Tensor]:
    return lambda: wrapper.network_call(call, model_input, sigma, entries)


def new_pass(wrappers: tuple[EasyCacheRun, ...]) -> None:
    """Tell the run's network wrappers that a new estimate starts (ComfyUI's calc_cond_batch)."""
    for wrapper in wrappers:
        wrapper.new_pass()


def wrapped_prediction(denoiser: Any, model: Any) -> Any:
    """The run's guided `denoiser` inside each of the model's prediction wrappers (LazyCache), fresh per run."""
    for wrapper in getattr(model, "sampling_wrappers", ()):
        if isinstance(wrapper, LazyCache):
            denoiser = wrapper.for_run(denoiser)
    return denoiser
