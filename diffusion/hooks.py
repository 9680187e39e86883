"""Weight hooks (ComfyUI's HOOKS): LoRA-like weight changes that a conditioning entry or a text encoder carries,
with optional keyframes that scale their strength over the sampling.

A `HookGroup` is an ordered set of `Hook`s; each hook names its weights (a LoRA file, or another checkpoint used
as a LoRA-like difference) through a `resolve` callable given by the caller, so this module knows nothing of files,
folders or nodes. Keyframes are strength multipliers that start at a percent of the sampling; a
`KeyframeCursor` follows them step by step by sigma, as ComfyUI's HookKeyframeGroup does (a keyframe keeps at
least its `guarantee_steps` steps once reached, unless it starts before the sampled range). Conditioning helpers
attach a group to every entry of a CONDITIONING (joined with the hooks an entry already has), or make a text
encoder attach it to what it encodes (`with_conditioning_hooks`, SetClipHooks' apply_to_conds).

At sampling time (`SamplingHooks`, used by `diffusion.sampling.guiders.ModelDenoiser`) each hook's weight
differences at strength 1 are read once per run from peft (`diffusion.lora` applies the LoRA alone and the
adapters' delta weights are kept); each network call is split into spans of entries with the same hooks, and each
span runs with strength * difference added to the weights in place and the original tensors put back after, as
ComfyUI groups conditions by hooks and patches the model per group.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

INTERPOLATIONS = ("linear", "ease_in", "ease_out", "ease_in_out")
LORA = "lora"
MODEL_AS_LORA = "model_as_lora"
_identities = itertools.count()


@dataclass(frozen=True)
class HookKeyframe:
    """From `start_percent` of the sampling on, the hooks' strengths are multiplied by `strength`."""

    strength: float
    start_percent: float = 0.0
    guarantee_steps: int = 1


@dataclass(frozen=True)
class HookKeyframeGroup:
    """Keyframes sorted by start percent (stable: equal starts keep the order they were added in)."""

    keyframes: tuple[HookKeyframe, ...] = ()

    def add(self, keyframe: HookKeyframe) -> HookKeyframeGroup:
        return HookKeyframeGroup(tuple(sorted((*self.keyframes, keyframe), key=lambda kf: kf.start_percent)))


def interpolated(start: float, end: float, count: int, method: str) -> list[float]:
    """`count` values from `start` to `end` spaced by `method` (ComfyUI's InterpolationMethod.get_weights)."""
    if method not in INTERPOLATIONS:
        raise ValueError(f"interpolation: {method!r} is not one of {', '.join(INTERPOLATIONS)}")
    if method == "linear":
        return torch.linspace(start, end, count).tolist()
    index = torch.linspace(0, 1, count)
    shape = {"ease_in": index ** 2, "ease_out": 1 - (1 - index) ** 2,
             "ease_in_out": (1 - torch.cos(index * math.pi)) / 2}[method]
    return ((end - start) * shape + start).tolist()


class KeyframeCursor:
    """The current keyframe strength of one group while one sampling runs: call `strength(sigma)` once per
    network call; a new sigma is a new step. `start_sigma` maps a keyframe's start percent to its sigma;
    `max_sigma` is the sampled range's first sigma (default: the first one asked for)."""

    def __init__(self, keyframes: HookKeyframeGroup, start_sigma: Callable[[float], float],
                 max_sigma: float | None = None):
        self.keyframes = keyframes.keyframes
        self.starts = [float(start_sigma(kf.start_percent)) for kf in self.keyframes]
        self.max_sigma = None if max_sigma is None else float(max_sigma)
        self.index, self.used_steps, self.last_sigma = 0, 0, None

    def _guaranteed(self, index: int) -> int:
        return 0 if self.starts[index] > self.max_sigma else self.keyframes[index].guarantee_steps

    def strength(self, sigma: float) -> float:
        if not self.keyframes:
            return 1.0
        sigma = float(sigma)
        if self.max_sigma is None:  # the run's first (largest) sigma
            self.max_sigma = sigma
        if sigma != self.last_sigma:
            if self.used_steps >= self._guaranteed(self.index):
                for index in range(self.index + 1, len(self.keyframes)):
                    if self.starts[index] < sigma:
                        break
                    self.index, self.used_steps = index, 0
                    if self._guaranteed(index) > 0:
                        break
            self.used_steps += 1
            self.last_sigma = sigma
        return self.keyframes[self.index].strength


@dataclass(frozen=True)
class Hook:
    """One weight change: `source` (a LoRA or checkpoint name) of `kind`, at `strength_model` on the denoising
    network and `strength_clip` on the text encoder, scaled by its keyframes. `resolve(family, strength, modules)`
    gives the diffusion.contracts.LoraPatch that applies it to `modules` ((LoRA component, module) pairs of the
    base model). Two hooks made separately stay two, even on the same file."""

    kind: str
    source: str
    strength_model: float
    strength_clip: float
    resolve: Callable[[str, float, list[tuple[str, Any]]], Any] = field(compare=False, repr=False)
    keyframes: HookKeyframeGroup = HookKeyframeGroup()
    identity: int = field(default_factory=lambda: next(_identities))


@dataclass(frozen=True)
class HookGroup:
    """An ordered set of hooks (ComfyUI's HookGroup); groups are values, every change gives a new one."""

    hooks: tuple[Hook, ...] = ()

    def __len__(self) -> int:
        return len(self.hooks)

    def combined(self, *others: HookGroup | None) -> HookGroup:
        """This group's hooks, then those of `others` that it lacks (one hook counts once, whatever keyframes its
        copies were given: ComfyUI compares hooks by reference)."""
        hooks = list(self.hooks)
        for other in others:
            for hook in other.hooks if other is not None else ():
                if all(hook.identity != present.identity for present in hooks):
                    hooks.append(hook)
        return HookGroup(tuple(hooks))

    def with_keyframes(self, keyframes: HookKeyframeGroup | None) -> HookGroup:
        """Every hook with `keyframes` (None: no keyframes, full strength throughout)."""
        return HookGroup(tuple(replace(hook, keyframes=keyframes or HookKeyframeGroup()) for hook in self.hooks))

    def model_hooks(self) -> list[Hook]:
        return [hook for hook in self.hooks if hook.strength_model != 0]

    def clip_hooks(self) -> list[Hook]:
        return [hook for hook in self.hooks if hook.strength_clip != 0]


def combine_all(groups: Iterable[HookGroup | None]) -> HookGroup | None:
    """The hooks of every given group in order (None when none was given), as ComfyUI's combine_all_hooks."""
    given = [group for group in groups if group is not None]
    return HookGroup().combined(*given) if given else None


def with_hooks(conditioning: Sequence[Sequence[Any]], hooks: HookGroup | None) -> list[list[Any]]:
    """Every entry with `hooks` joined to the hooks it already carries (unchanged entries when None)."""
    if hooks is None:
        return [list(entry) for entry in conditioning]
    result = []
    for entry in conditioning:
        options = dict(entry[1]) if len(entry) > 1 else {}
        existing = options.get("hooks")
        options["hooks"] = existing.combined(hooks) if existing is not None else hooks
        result.append([entry[0], options])
    return result


def _deltas(network: Any, component: str, patch: Any) -> dict[str, torch.Tensor]:
    """Parameter name -> the float32 weight difference `patch` (at strength 1) makes in `network`: read once from
    peft's adapter while `diffusion.lora` applies it alone, so every LoRA layout diffusers reads works."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from diffusion.lora import lora_applied

    if any(isinstance(layer, BaseTunerLayer) for layer in network.modules()):
        raise ValueError("hooks: a model with LoRAs from LoraLoader cannot take weight hooks as well; "
                         "give those LoRAs as hooks too (CreateHookLora)")
    before = {name: parameter.data for name, parameter in network.named_parameters()}  # (keeps them alive)
    deltas: dict[str, torch.Tensor] = {}
    with torch.no_grad(), lora_applied(network, component, [patch]):
        for name, layer in network.named_modules():
            adapters = list(getattr(layer, "lora_A", {})) if isinstance(layer, BaseTunerLayer) else []
            for adapter in adapters:
                deltas[f"{name}.weight"] = layer.get_delta_weight(adapter).float()
        for name, parameter in network.named_parameters():
            name = name.replace("base_layer.", "")
            original = before.get(name)
            if original is not None and parameter.data_ptr() != original.data_ptr():  # a whole difference added
                deltas[name] = deltas.get(name, 0) + (parameter.data.float() - original.float())
    return deltas


def differences_patch(name: str, base: Sequence[tuple[str, Any]], other: Sequence[tuple[str, Any]]) -> Any:
    """Another model's weights as a LoRA-like patch (ComfyUI's model_as_lora, W + strength * (W_other - W)): the
    differences of every parameter of the `other` modules to the same-named, same-shaped one of the `base` modules
    ((LoRA component, module) pairs), as `diffusion.lora_formats` deferred difference keys."""
    from diffusion.contracts import LoraPatch
    from diffusion.lora_formats import DIFF, DIFF_BIAS

    others = dict(other)
    state: dict[str, torch.Tensor] = {}
    for component, module in base:
        if component not in others:
            continue
        theirs = dict(others[component].named_parameters())
        for parameter_name, parameter in module.named_parameters():
            layer, _, what = parameter_name.rpartition(".")
            match = theirs.get(parameter_name)
            if what not in ("weight", "bias") or match is None or match.shape != parameter.shape:
                continue
            difference = match.detach().float() - parameter.detach().float().to(match.device)
            if difference.any():
                state[f"{component}.{layer}.{DIFF if what == 'weight' else DIFF_BIAS}"] = difference.cpu()
    return LoraPatch(name, state, None, 1.0)


class SamplingHooks:
    """The weight hooks of one sampling run's conditioning entries on the model's network. `applied(entry,
    sigma)` gives the network the weights of that entry's hooks (each at strength_model times its current keyframe
    strength) for one call, adding precomputed differences to the weights and putting the originals back after;
    entries with different hooks must run in separate calls (`runs`)."""

    def __init__(self, network: Any, component: str, family: str, entry_hooks: Sequence[HookGroup | None],
                 percent_to_sigma: Callable[[float], float]) -> None:
        self.network, self.entry_hooks = network, list(entry_hooks)
        self.parameters = dict(network.named_parameters())
        self.deltas: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        self.cursors: dict[Hook, KeyframeCursor] = {}
        for group in {group for group in self.entry_hooks if group is not None}:
            for hook in group.model_hooks():
                if (hook.kind, hook.source) not in self.deltas:
                    patch = hook.resolve(family, 1.0, [(component, network)])
                    self.deltas[(hook.kind, hook.source)] = _deltas(network, component, patch)
                self.cursors[hook] = KeyframeCursor(hook.keyframes, percent_to_sigma, None)

    @classmethod
    def for_entries(cls, network: Any, component: str, family: str, entry_options: Sequence[dict[str, Any]],
                    percent_to_sigma: Callable[[float], float]) -> SamplingHooks | None:
        """The run's hooks, or None when no entry has any (nothing to do per call)."""
        entry_hooks = [options.get("hooks") for options in entry_options]
        if not any(group is not None and group.model_hooks() for group in entry_hooks):
            return None
        return cls(network, component, family, entry_hooks, percent_to_sigma)

    def _key(self, entry: int) -> tuple[Hook, ...]:
        group = self.entry_hooks[entry]
        return () if group is None else tuple(group.model_hooks())

    def runs(self, entries: Sequence[int]) -> list[tuple[int, int]]:
        """(first, stop) positions in `entries` of the consecutive entries with the same hooks."""
        spans, first = [], 0
        for position in range(1, len(entries) + 1):
            if position == len(entries) or self._key(entries[position]) != self._key(entries[first]):
                spans.append((first, position))
                first = position
        return spans

    @contextlib.contextmanager
    def applied(self, entry: int, sigma: float) -> Iterator[None]:
        totals: dict[str, torch.Tensor] = {}
        for hook in self._key(entry):
            strength = hook.strength_model * self.cursors[hook].strength(sigma)
            if strength == 0:
                continue
            for name, delta in self.deltas[(hook.kind, hook.source)].items():
                change = strength * delta.to(self.parameters[name].device)
                totals[name] = totals[name] + change if name in totals else change
        originals = []
        try:
            with torch.no_grad():
                for name, total in totals.items():
                    parameter = self.parameters[name]
                    originals.append((parameter, parameter.data))
                    parameter.data = (parameter.data.float() + total).to(parameter.dtype)
            yield
        finally:
            for parameter, original in originals:
                parameter.data = original

    def wrapped_network_output(self, network_output: Callable[..., torch.Tensor], batch: int
                               ) -> Callable[..., torch.Tensor]:
        """`network_output(network, model_input, timestep, embeddings, inputs, entries, sigma)` (the guiders' one
        call for the rows of guidance `entries`, `batch` rows each) run once per span of entries with the same
        hooks, each with its hooks' weights, the outputs joined in row order."""

        def hooked(network: Any, model_input: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor,
                   inputs: Any, entries: Sequence[int], sigma: torch.Tensor) -> torch.Tensor:
            entries, level, total = list(entries), float(sigma.reshape(-1)[0]), model_input.shape[0]
            spans, outputs = self.runs(entries), []
            for first, stop in spans:
                rows = slice(first * batch, stop * batch)
                call = (network, model_input, timestep, embeddings, inputs) if len(spans) == 1 else (
                    _network_rows(network, rows), *(_input_rows(value, rows, total)
                                                    for value in (model_input, timestep, embeddings, inputs)))
                with self.applied(entries[first], level):
                    outputs.append(network_output(*call, entries[first:stop], sigma))
            return torch.cat(outputs) if len(outputs) > 1 else outputs[0]

        return hooked


def _input_rows(value: Any, rows: slice, total: int) -> Any:
    """The rows `rows` of every per-row tensor (first dimension `total`) inside a network input."""
    if isinstance(value, torch.Tensor):
        return value[rows] if value.ndim and value.shape[0] == total else value
    if isinstance(value, dict):
        return {key: _input_rows(item, rows, total) for key, item in value.items()}
    return value


def _network_rows(network: Any, rows: slice) -> Any:
    """The network for some rows of a call: an image-editing network's extra channels cut to those rows."""
    from diffusion.sampling.editing import ExtraChannels

    return ExtraChannels(network.unet, network.channels[rows]) if isinstance(network, ExtraChannels) else network


@functools.cache
def _conditioning_hooks_type(encoder_type: type) -> type:
    """A subclass of a text encoder dataclass that attaches `conds_hooks` to what it encodes; being a subclass,
    family checks still accept it, and dataclasses.replace (with_layer, with_lora) keeps it."""

    @dataclass(frozen=True, eq=False)
    class HookedEncoder(encoder_type):
        conds_hooks: Any = None

        def encode_prompt(self, *args: Any, **kwargs: Any) -> Any:
            return with_hooks(super().encode_prompt(*args, **kwargs), self.conds_hooks)

    if callable(getattr(encoder_type, "encode", None)):
        def encode(self: Any, *args: Any, **kwargs: Any) -> Any:
            return with_hooks(super(HookedEncoder, self).encode(*args, **kwargs), self.conds_hooks)

        HookedEncoder.encode = encode
    HookedEncoder.__name__ = HookedEncoder.__qualname__ = encoder_type.__name__
    return HookedEncoder


def with_conditioning_hooks(clip: Any, hooks: HookGroup) -> Any | None:
    """The text encoder, its encodings carrying `hooks` (joined with any it attaches already), as ComfyUI's CLIP
    with apply_hooks_to_conds; None for a text encoder that is not a dataclass."""
    if not dataclasses.is_dataclass(clip):
        return None
    existing = getattr(clip, "conds_hooks", None)
    hooked = any(field.name == "conds_hooks" for field in dataclasses.fields(clip))
    base = type(clip).__mro__[1] if hooked else type(clip)
    values = {field.name: getattr(clip, field.name) for field in dataclasses.fields(clip) if field.init}
    values["conds_hooks"] = hooks if existing is None else existing.combined(hooks)
    return _conditioning_hooks_type(base)(**values)


DEFAULT = "default"  # the option the Set Default Combine nodes mark entries with


def has_default_entries(entry_options: Sequence[Any]) -> bool:
    return any(DEFAULT in options for options in entry_options)


def with_default_weights(placements: Sequence[Any], entry_options: Sequence[Any], shape: torch.Size,
                         sigma: float) -> list[Any]:
    """The guiders' placements (side, entry, region, strength) at noise level `sigma` with each default entry
    (ComfyUI's "default" option) weighted by what the other active entries of its side leave uncovered (one minus
    their summed weights, at least 0), and dropped where that is nothing, as ComfyUI's finalize_default_conds."""
    from diffusion.sampling.regions import Region

    def is_default(placement: Any) -> bool:
        return DEFAULT in entry_options[placement.entry] and (placement.region is None
                                                              or placement.region.area is None)

    def active(placement: Any) -> bool:
        return placement.region is None or placement.region.active(sigma)

    covered: dict[int, torch.Tensor] = {}
    for placement in placements:
        if is_default(placement) or not active(placement):
            continue
        canvas = covered.setdefault(placement.side, torch.zeros(shape))
        if placement.region is None:
            canvas += placement.strength
        else:
            placement.region.crop(canvas).add_(placement.region.weight.to(canvas.device, canvas.dtype))
    result = []
    for placement in placements:
        if not is_default(placement):
            result.append(placement)
            continue
        if not active(placement):
            continue
        weight = torch.relu(1 - covered.get(placement.side, torch.zeros(shape)))
        if weight.max() == 0:
            continue
        bounds = (None, None) if placement.region is None else (placement.region.sigma_start,
                                                                placement.region.sigma_end)
        result.append(dataclasses.replace(placement, region=Region(None, weight, *bounds), strength=1.0))
    return result
