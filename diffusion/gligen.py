"""GLIGEN for SD1.x UNets, as ComfyUI runs it: boxed phrases (GLIGENTextBoxApply) steer where things appear.

A GLIGEN file (gligen_sd14_textbox_pruned.safetensors, in ComfyUI's layout) holds only the added layers: one gated
self-attention "fuser" per transformer block of the UNet, keyed by the block's original (LDM) name
(`input_blocks.1.1.transformer_blocks.0.fuser.*`, `middle_block.1.*`, `output_blocks.*`), and the position net
(`position_net.*`) that turns each box (Fourier-embedded corners) and its phrase's pooled CLIP embedding into a
grounding token. These are diffusers' `GatedSelfAttentionDense` and `GLIGENTextBoundingboxProjection` (the layers
of a UNet2DConditionModel with `attention_type="gated"`), whose weights are named as ComfyUI's after the block
prefix, so loading only maps the block names (`diffusion.families.ldm_export` gives each diffusers block its LDM
name). A fuser's attention heads are the UNet block's own (8 for SD1.x, ComfyUI's count for these files).

Conditioning carries GLIGEN as ComfyUI's does: the option `gligen` = ("position", Gligen, [(pooled embedding
[1, width], height, width, y, x), ...]) with the box in latent pixels. While sampling (`network_inputs` and
`network_output`, called by the SD family's sampling hooks) each guidance row gets its entry's boxes, at most
`MAX_OBJECTS`, padded with null objects; the boxes are divided by the size of the latents each network call sees
(an area's crop, as ComfyUI's). Negative entries without an area and without GLIGEN get the positives' (ComfyUI's
`apply_empty_x_to_equal_area`: each positive's in turn, the last one a negative receives wins), so the negative
rows are grounded too; with no GLIGEN in the run nothing changes.

How the MODEL picks up the GLIGEN network: for a call whose rows carry GLIGEN, the fusers and the position net are
attached to the UNet module for that call only (`attached`, the way `diffusion.sampling.network_changes` changes a
network) and removed afterwards, also on error. The UNet's own weights are used as they are, so LoRAs injected
for the run and in-place UNet patches act on the grounded calls too, which a separate copy of the network would
miss; the cached model is as before after every call. Rows of the same call without GLIGEN skip the fusers
(`RowFuser`), so they compute exactly what the plain UNet computes. Knows nothing of nodes or folders.
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import torch

from diffusion.files import empty_weights, load_strict

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

GLIGEN_OPTION = "gligen"  # the conditioning option GLIGENTextBoxApply appends boxes to (ComfyUI's name)
POSITION = "position"  # the kind of GLIGEN conditioning: boxed phrases
MAX_OBJECTS = 30  # ComfyUI's (and GLIGEN's) number of grounding tokens
GROUNDING_INPUT = "gligen_grounding"  # the network input `network_inputs` adds; `network_output` takes it off
FUSER = ".fuser."
POSITION_NET = "position_net."
DIFFUSION_MODEL_PREFIX = "model.diffusion_model."
SD1_TEXT_WIDTH = 768  # ComfyUI gives 768-wide (SD1.x) GLIGENs 8 heads, others 64-channel heads
SD1_HEADS = 8
HEAD_WIDTH = 64


@dataclass(frozen=True, eq=False)
class Gligen:
    """GLIGEN: the position net (diffusers' GLIGENTextBoundingboxProjection) and the fusers (GatedSelfAttentionDense)
    by the LDM name of the transformer block each follows; `name` is the file's."""

    name: str
    position_net: torch.nn.Module
    fusers: Mapping[str, torch.nn.Module]

    def __post_init__(self) -> None:
        # UNet module -> [(diffusers block name, fuser with that block's heads)]: not a field, so that the memory
        # manager, which walks a loaded value's fields, does not count the UNet's blocks as this model's
        object.__setattr__(self, "_plans", weakref.WeakKeyDictionary())

    @property
    def embedding_width(self) -> int:
        """The width of the phrase embeddings it takes (768: SD1.x CLIP's pooled output)."""
        return int(self.position_net.positive_len)

    def plan(self, unet: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """(diffusers name of each transformer block of `unet`, its fuser); a ValueError when the GLIGEN does not
        fit the UNet (another family, a block without a fuser or the other way round)."""
        plans = self._plans  # type: ignore[attr-defined]
        if unet not in plans:
            plans[unet] = self._make_plan(unet)
        return plans[unet]

    def _make_plan(self, unet: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        from diffusers.models.attention import BasicTransformerBlock

        blocks = {name: module for name, module in unet.named_modules() if isinstance(module, BasicTransformerBlock)}
        names = _ldm_block_names(unet, list(blocks))
        unmatched = sorted(set(self.fusers) - set(names.values()))
        missing = sorted(set(names.values()) - set(self.fusers))
        if missing or unmatched:
            problem = (f"no fuser for the UNet's {missing[0]}" if missing
                       else f"its fuser {unmatched[0]} has no such block in the UNet")
            raise ValueError(f"positive: GLIGEN {self.name} does not fit this model's UNet ({problem}); GLIGEN "
                             "models are made for one UNet layout (gligen_sd14_* for SD1.x)")
        plan = []
        for name, block in blocks.items():
            fuser = self.fusers[names[name]]
            if fuser.linear.out_features != block.norm1.normalized_shape[0]:
                raise ValueError(f"positive: GLIGEN {self.name} does not fit this model's UNet: its fuser "
                                 f"{names[name]} is {fuser.linear.out_features} wide, the block "
                                 f"{block.norm1.normalized_shape[0]}")
            plan.append((name, _with_heads(fuser, block.attn1.heads)))
        return plan


def _ldm_block_names(unet: torch.nn.Module, names: Sequence[str]) -> dict[str, str]:
    """The LDM name (`input_blocks.1.1.transformer_blocks.0`) of each diffusers transformer block name."""
    from diffusion.families.ldm_export import UNET_PREFIX, unet_to_ldm

    marker = "norm1.weight"
    probe = torch.zeros(0)
    try:
        converted = unet_to_ldm({f"{name}.{marker}": probe for name in names}, dict(unet.config))
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"positive: GLIGEN runs on SD1.x UNets; this model's network has no such layout "
                         f"({error})") from error
    ldm_names = [key[len(UNET_PREFIX):-len(marker) - 1] for key in converted]
    return dict(zip(names, ldm_names))


def _with_heads(fuser: torch.nn.Module, heads: int) -> torch.nn.Module:
    """`fuser` computing with `heads` attention heads: itself when it has them, else a module sharing its
    parameters (the heads change how the projections are split, not the weights)."""
    if fuser.attn.heads == heads:
        return fuser
    from diffusers.models.attention import GatedSelfAttentionDense

    width = fuser.linear.out_features
    with empty_weights():
        variant = GatedSelfAttentionDense(width, fuser.linear.in_features, heads, width // heads)
    variant.load_state_dict(fuser.state_dict(keep_vars=True), strict=True, assign=True)
    return variant


# ---------------------------------------------------------------- loading

def _comfy_heads(query_dim: int, key_dim: int) -> int:
    """The heads ComfyUI builds a fuser with (the UNet's block decides when attached; see `Gligen.plan`)."""
    return SD1_HEADS if key_dim == SD1_TEXT_WIDTH else max(1, query_dim // HEAD_WIDTH)


def describe_other(keys: set[str]) -> str:
    """What a file that is no GLIGEN text-box model holds, in words."""
    from diffusion import registry

    if any(key.startswith((POSITION_NET + "linears_text.", POSITION_NET + "linears_image.")) for key in keys):
        return "a GLIGEN text-image model (boxes with reference images), which GLIGENTextBoxApply cannot use"
    try:
        family = registry.checkpoint_family(keys)
    except ValueError:
        return registry.describe_other_file(keys)
    return f"a {family.title} checkpoint (load it with CheckpointLoaderSimple)"


def gligen_from_state_dict(state: Mapping[str, Any], name: str, input_name: str = "gligen_name") -> Gligen:
    """A GLIGEN from its tensors in ComfyUI's layout (optionally under `model.diffusion_model.`), on the CPU; a
    ValueError naming `input_name` that says what the file is when it is no GLIGEN text-box model."""
    from diffusers.models.attention import GatedSelfAttentionDense
    from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

    tensors = {key.removeprefix(DIFFUSION_MODEL_PREFIX): value
               for key, value in state.items() if torch.is_tensor(value)}
    fuser_weights: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if FUSER in key:
            block, rest = key.split(FUSER, 1)
            fuser_weights.setdefault(block, {})[rest] = tensor
    position = {key[len(POSITION_NET):]: tensor for key, tensor in tensors.items() if key.startswith(POSITION_NET)}
    if not fuser_weights or "null_positive_feature" not in position or "linears.4.weight" not in position:
        raise ValueError(f"{input_name}: {name} is not a GLIGEN text-box model: this file holds "
                         f"{describe_other(set(state))}")
    what = f"{input_name}: {name}: GLIGEN"
    try:
        in_dim = position["null_positive_feature"].shape[0]
        out_dim = position["linears.4.weight"].shape[0]
        with empty_weights():
            position_net = GLIGENTextBoundingboxProjection(positive_len=in_dim, out_dim=out_dim)
        load_strict(position_net, position, f"{what} position net")
        fusers = {}
        for block, weights in fuser_weights.items():
            query_dim, key_dim = weights["linear.weight"].shape
            heads = _comfy_heads(query_dim, key_dim)
            with empty_weights():
                fuser = GatedSelfAttentionDense(query_dim, key_dim, heads, query_dim // heads)
            fusers[block] = load_strict(fuser, weights, f"{what} fuser {block}")
    except KeyError as error:
        raise ValueError(f"{what} weights incomplete: {error} missing") from error
    return Gligen(name, position_net, fusers)


def load_gligen(models: "ModelManager", path: Path, input_name: str = "gligen_name") -> Gligen:
    """A GLIGEN file (.safetensors, or a pickled .pt/.pth/.bin read tensors-only) on the manager's device and
    dtype, cached and budgeted by it."""
    from diffusion.upscale import read_state_dict

    path = Path(path)

    def load() -> Gligen:
        state = read_state_dict(path, input_name)
        if isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        gligen = gligen_from_state_dict(state, path.name, input_name)
        models.place(gligen.position_net)
        for fuser in gligen.fusers.values():
            models.place(fuser)
        return gligen

    return models.cached("gligen", path, input_name, load)


# ---------------------------------------------------------------- sampling

def entry_gligens(options: Sequence[Mapping[str, Any]], negatives: int) -> list[Any]:
    """The GLIGEN conditioning of each guidance entry (negatives first), the negatives filled in from the
    positives as ComfyUI fills them (see the module docstring); None for entries without."""
    values = [entry.get(GLIGEN_OPTION) for entry in options]
    if any(values[index] is not None for index in range(negatives) if "area" not in options[index]):
        return values
    shared = [values[index] for index in range(negatives, len(options))
              if values[index] is not None and "area" not in options[index]]
    open_negatives = [index for index in range(negatives) if "area" not in options[index]]
    if open_negatives:
        for number, value in enumerate(shared):
            values[open_negatives[number % len(open_negatives)]] = value
    return values


def _entry_rows(value: Any, width: int, input_name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One entry's boxes [MAX_OBJECTS, 4] (x1, y1, x2, y2 in latent pixels), phrase embeddings
    [MAX_OBJECTS, width] and object mask [MAX_OBJECTS], padded with null objects."""
    kind, gligen, positions = value[0], value[1], (value[2] if len(value) > 2 else [])
    positions = list(positions) if kind == POSITION else []  # any other kind: grounded with no objects
    if len(positions) > MAX_OBJECTS:
        raise ValueError(f"{input_name}: {len(positions)} GLIGEN boxes; GLIGEN takes at most {MAX_OBJECTS}")
    boxes = torch.zeros(MAX_OBJECTS, 4)
    embeddings = torch.zeros(MAX_OBJECTS, width)
    masks = torch.zeros(MAX_OBJECTS)
    for index, (embedding, height, box_width, y, x) in enumerate(positions):
        embedding = embedding.float().cpu().reshape(-1)
        if embedding.shape[0] != width:
            raise ValueError(f"{input_name}: a GLIGEN box's phrase embedding has {embedding.shape[0]} values; "
                             f"GLIGEN {gligen.name} takes {width} (encode the text with an SD1.x CLIP)")
        boxes[index] = torch.tensor([x, y, x + box_width, y + height], dtype=torch.float32)
        embeddings[index] = embedding
        masks[index] = 1.0
    return boxes, embeddings, masks


def network_inputs(options: Sequence[Mapping[str, Any]], negatives: int, unconditionals: int, batch: int,
                   device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """The grounding of every guidance row (entries `options`, negatives first, then the `unconditionals`
    negatives again, `batch` rows each) under `GROUNDING_INPUT`; {} when no entry carries GLIGEN."""
    values = entry_gligens(options, negatives)
    values += values[:unconditionals]
    models = {id(value[1]): value[1] for value in values if value is not None}
    if not models:
        return {}
    if len(models) > 1:
        raise ValueError("positive: the conditioning uses several GLIGEN models in one run; use one GLIGEN model "
                         "for all boxes")
    (gligen,) = models.values()
    width = gligen.embedding_width
    entry_rows = {}  # each entry's own boxes, read once, errors naming the side the entry is on
    for index, entry in enumerate(options):
        own = entry.get(GLIGEN_OPTION)
        if own is not None and id(own) not in entry_rows:
            entry_rows[id(own)] = _entry_rows(own, width, "negative" if index < negatives else "positive")
    ungrounded = (torch.zeros(MAX_OBJECTS, 4), torch.zeros(MAX_OBJECTS, width),
                  torch.zeros(MAX_OBJECTS))
    boxes, embeddings, masks, active = [], [], [], []
    for value in values:
        rows = ungrounded if value is None else entry_rows[id(value)]
        boxes.append(rows[0].expand(batch, -1, -1))
        embeddings.append(rows[1].expand(batch, -1, -1))
        masks.append(rows[2].expand(batch, -1))
        active.append(torch.full((batch,), value is not None))
    return {GROUNDING_INPUT: {"model": gligen, "boxes": torch.cat(boxes).to(device),
                              "positive_embeddings": torch.cat(embeddings).to(device, dtype),
                              "masks": torch.cat(masks).to(device, dtype), "active": torch.cat(active).to(device)}}


class RowFuser(torch.nn.Module):
    """A fuser that grounds only the rows marked active (its `objs` are (grounding tokens, active rows)); the
    others pass through unchanged, as in a UNet without GLIGEN."""

    def __init__(self, fuser: torch.nn.Module) -> None:
        super().__init__()
        self.fuser = fuser

    def forward(self, hidden_states: torch.Tensor, objs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        tokens, active = objs
        dtype = self.fuser.linear.weight.dtype  # the UNet may compute in another precision (ModelComputeDtype)
        if bool(active.all()):
            return self.fuser(hidden_states.to(dtype), tokens.to(dtype)).to(hidden_states.dtype)
        grounded = hidden_states.clone()
        grounded[active] = self.fuser(hidden_states[active].to(dtype), tokens[active].to(dtype)).to(grounded.dtype)
        return grounded


class RowPositionNet(torch.nn.Module):
    """The position net, passing the active rows on to the fusers with the grounding tokens."""

    def __init__(self, position_net: torch.nn.Module) -> None:
        super().__init__()
        self.position_net = position_net

    def forward(self, boxes: torch.Tensor, masks: torch.Tensor, positive_embeddings: torch.Tensor,
                active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.position_net.null_position_feature.dtype
        return self.position_net(boxes=boxes.to(dtype), masks=masks.to(dtype),
                                 positive_embeddings=positive_embeddings.to(dtype)), active


_ABSENT = object()


@contextlib.contextmanager
def attached(unet: torch.nn.Module, gligen: Gligen) -> Iterator[None]:
    """The GLIGEN layers in `unet` (a UNet2DConditionModel) while the block runs: each transformer block's `fuser`
    and the UNet's `position_net`, row-aware (`RowFuser`); what was there before (nothing, for a plain UNet) is
    back afterwards, also on error."""
    changes = [(unet, "position_net", RowPositionNet(gligen.position_net))]
    changes += [(unet.get_submodule(name), "fuser", RowFuser(fuser)) for name, fuser in gligen.plan(unet)]
    saved = [(module, attribute, getattr(module, attribute, _ABSENT)) for module, attribute, _ in changes]
    try:
        for module, attribute, value in changes:
            setattr(module, attribute, value)
        yield
    finally:
        for module, attribute, value in saved:
            if value is _ABSENT:
                delattr(module, attribute)
            else:
                setattr(module, attribute, value)


def _unet_of(network: Any) -> torch.nn.Module:
    """The UNet module behind the network a sampler calls (inside an inpainting stand-in, a compiled wrapper)."""
    unet = getattr(network, "unet", network) if not isinstance(network, torch.nn.Module) else network
    return getattr(unet, "_orig_mod", unet)


def grounded_output(call: Callable[..., torch.Tensor], network: Any, model_input: torch.Tensor,
                    timestep: torch.Tensor, embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
    """`call(network, model_input, timestep, embeddings, inputs)` (a family's plain network call) with the rows'
    GLIGEN grounding (`GROUNDING_INPUT`, from `network_inputs`) applied; the plain call when no row has any. The
    boxes are divided by the size of `model_input` (the whole latents, or an area's crop)."""
    grounding = inputs.get(GROUNDING_INPUT)
    if grounding is None:
        return call(network, model_input, timestep, embeddings, inputs)
    inputs = {key: value for key, value in inputs.items() if key != GROUNDING_INPUT}
    active = grounding["active"]
    if not bool(active.any()):
        return call(network, model_input, timestep, embeddings, inputs)
    height, width = model_input.shape[-2:]
    # float32 division of whole numbers rounds as ComfyUI's (Python's quotient made a float32 tensor)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=grounding["boxes"].device)
    dtype = grounding["positive_embeddings"].dtype
    arguments = {"boxes": (grounding["boxes"] / scale).to(dtype), "masks": grounding["masks"],
                 "positive_embeddings": grounding["positive_embeddings"], "active": active}
    extra = dict(inputs.get("cross_attention_kwargs") or {})
    inputs = {**inputs, "cross_attention_kwargs": {**extra, "gligen": arguments}}
    with attached(_unet_of(network), grounding["model"]):
        return call(network, model_input, timestep, embeddings, inputs)
