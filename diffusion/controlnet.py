"""ControlNets: reading them from the single files people download for ComfyUI, and the residuals they add to a
family's denoising network at one step.

Kinds, told apart by their tensor names (`detect_kind`):
- `unet`: a ControlNet for SD1.x/SD2.x/SDXL UNets, diffusers' ControlNetModel, from the original layout
  (`control_model.*`, as lllyasviel's control_v11 files) or the diffusers layout (SDXL ControlNets);
- `union`: diffusers' ControlNetUnionModel (xinsir's SDXL ControlNet++), steered by a control type;
- `sd3`: diffusers' SD3ControlNetModel (InstantX's SD3 ControlNets), hint encoded by the VAE;
- `flux`: diffusers' FluxControlNetModel (InstantX's and Shakker-Labs' FLUX ControlNets), hint encoded by the VAE;
- `t2i_adapter`: diffusers' T2IAdapter (full adapters for SD1.x and SDXL), from TencentARC's original layout or the
  diffusers layout; its features are added inside the UNet's down blocks where ComfyUI adds them.
The architecture is read from the tensor shapes, never fetched. Files of another kind (a LoRA, a checkpoint,
a light T2I-Adapter, a Control-LoRA) are refused with a ValueError saying what they hold.

At sampling time a conditioning entry carries an `AppliedControl` (ComfyUI's `control` option): the ControlNet,
its hint image, strength, the part of the run it acts in, and the control applied before it (chained controls add
up). `network_kwargs` turns the controls of a network call's rows into the keyword arguments the family's network
takes (`down_block_additional_residuals`/`mid_block_additional_residual` for UNets, `down_intrablock_additional_
residuals` for T2I-Adapters, the block samples for SD3 and FLUX transformers). ComfyUI's details kept: hints are
cropped from the centre and resized ("nearest-exact") to the latents' pixels, VAE-encoded hints are put into the
model's latent space, a difference ControlNet gets its model's weights added, a shuffle ControlNet's residuals are
pooled over the image, and a union ControlNet told no type runs without its type tokens. An entry whose options hold
`cross_attn_controlnet` (CLIPTextEncodeControlnet) gives its ControlNets that text instead of its own, as ComfyUI's
get_control does; the network itself keeps the entry's text. Knows nothing of nodes or folders: callers pass
resolved paths and the input name.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from diffusion.files import block_indices, load_strict, safetensors_keys
from diffusion.manager import ModelManager

CONTROLNET_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
LDM_PREFIX = "control_model."
UNET, UNION, SD3, FLUX, T2I = "unet", "union", "sd3", "flux", "t2i_adapter"
# the families each kind of ControlNet steers (`diffusion.registry` names)
KIND_FAMILIES = {UNET: ("sd", "sdxl"), UNION: ("sd", "sdxl"), SD3: ("sd3",), FLUX: ("flux",), T2I: ("sd", "sdxl")}
KIND_TITLES = {UNET: "UNet ControlNet", UNION: "union ControlNet", SD3: "SD3 ControlNet", FLUX: "FLUX ControlNet",
               T2I: "T2I-Adapter"}
KIND_FAMILY_TITLES = {"sd": "SD1.x/SD2.x", "sdxl": "SDXL", "sd3": "SD3", "flux": "FLUX"}
T2I_RESIDUALS = "down_intrablock_additional_residuals"  # where diffusers' UNets take adapter features
T2I_XL_INPUTS = (256, 768)  # conv_in inputs of SDXL adapters (16x16 pixels unshuffled), as ComfyUI tells them
HINT_METHOD = "nearest-exact"  # ComfyUI resizes hints with this, cropping to the latents' aspect from the centre
SDXL_TIME_EMBED = 256  # SDXL's width per size number (addition_time_embed_dim; see `_fit_time_embedding`)
HEAD_CHANNELS = 64  # SD2/SDXL attention heads (linear projections); SD1's UNets have 8 heads of any width
SD1_HEADS = 8
DIFFERENCE = "difference"  # the entry marking a difference ControlNet
SHUFFLE_SUFFIXES = ("_shuffle", "_shuffle_fp16")  # file names ComfyUI pools the residuals of
UNION_HEADS = 8  # the attention heads of a union ControlNet's control-type transformer (xinsir's; not in the file)
# tensors of transformer ControlNets in layouts this engine does not read -> what they are
OTHER_TRANSFORMER_CONTROLNETS = {
    "transformer_blocks.0.adaLN_modulation.1.bias": "an SD3.5 ControlNet in Stability's layout, which this engine "
                                                    "does not run",
    "double_blocks.0.img_attn.norm.key_norm.scale": "an XLabs FLUX ControlNet, which this engine does not run",
    "transformer_blocks.0.img_mlp.net.0.proj.weight": "a Qwen-Image ControlNet (this engine runs no Qwen-Image "
                                                      "models)",
}
# ControlNetUnionModel's control types in xinsir's order; ComfyUI's SetUnionControlNetType names them like this
UNION_TYPES = ("openpose", "depth", "hed/pidi/scribble/ted", "canny/lineart/anime_lineart/mlsd", "normal",
               "segment", "tile", "repaint")
CONTROL_TEXT = "cross_attn_controlnet"  # the conditioning option with the text an entry's ControlNets read


# -- what a file holds ------------------------------------------------------------------------------------------


def detect_kind(keys: set[str]) -> str | None:
    """The kind of ControlNet whose tensor names these are, or None."""
    if "controlnet_blocks.0.weight" in keys and not keys & OTHER_TRANSFORMER_CONTROLNETS.keys():
        if "controlnet_x_embedder.weight" in keys:
            return FLUX
        if "pos_embed_input.proj.weight" in keys:
            return SD3
    if "adapter.body.0.resnets.0.block1.weight" in keys or "conv_in.weight" in keys and "body.0.block1.weight" in keys:
        return T2I
    if "controlnet_cond_embedding.conv_in.weight" in keys:
        return UNION if "task_embedding" in keys else UNET
    if LDM_PREFIX + "input_hint_block.0.weight" in keys or "input_hint_block.0.weight" in keys and \
            "zero_convs.0.0.weight" in keys:
        return UNET
    return None


def describe_other(keys: set[str]) -> str:
    """What a file that is no ControlNet of a kind this engine runs holds, in words."""
    from diffusion import registry

    if "lora_controlnet" in keys:
        return "a Control-LoRA (Stability's LoRA-compressed ControlNet), which this engine does not run"
    if "body.0.in_conv.weight" in keys or "adapter.body.0.in_conv.weight" in keys:
        return "a light T2I-Adapter, which this engine does not run"
    for key, description in OTHER_TRANSFORMER_CONTROLNETS.items():
        if key in keys:
            return description
    if "input_hint_block.0.weight" in keys or "controlnet_blocks.0.linear.weight" in keys:
        return "a ControlNet in a layout this engine does not read (XLabs or Mistoline FLUX, or similar)"
    if any("lora_" in key or key.endswith(".alpha") for key in keys):
        return "a LoRA (load it with LoraLoader)"
    try:
        family = registry.checkpoint_family(keys)
    except ValueError:
        return registry.describe_other_file(keys)
    return f"a {family.title} checkpoint (load it with CheckpointLoaderSimple)"


# -- building the networks from shapes ----------------------------------------------------------------------------


def _ldm_to_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original-layout (`control_model.*` or bare) UNet ControlNet re-keyed to diffusers' ControlNetModel with
    diffusers' converter; SDXL's added embedding (`label_emb`), which the converter leaves out, re-keyed here."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_controlnet_checkpoint

    bare = {key.removeprefix(LDM_PREFIX): tensor for key, tensor in state.items()}
    blocks = block_indices(bare, "input_blocks.")
    downsamplers = [i for i in blocks if f"input_blocks.{i}.0.op.weight" in bare]
    layers_per_block = (len(blocks) - 1 - len(downsamplers)) // (len(downsamplers) + 1)
    converted = dict(convert_controlnet_checkpoint(bare, {"layers_per_block": layers_per_block}))
    for diffusers_key, ldm_key in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
        if ldm_key in bare:
            converted[diffusers_key] = bare[ldm_key]
    return converted


def unet_controlnet_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """ControlNetModel (or ControlNetUnionModel) arguments read from diffusers-layout tensor shapes."""
    levels = block_indices(state, "down_blocks.")
    channels = [state[f"down_blocks.{level}.resnets.0.conv2.weight"].shape[0] for level in levels]
    attention = [f"down_blocks.{level}.attentions.0.proj_in.weight" in state for level in levels]
    depths = [len(block_indices(state, f"down_blocks.{level}.attentions.0.transformer_blocks.")) or 1
              for level in levels]
    first = attention.index(True) if any(attention) else None
    linear = first is not None and state[f"down_blocks.{first}.attentions.0.proj_in.weight"].ndim == 2
    embedding = block_indices(state, "controlnet_cond_embedding.blocks.")
    config: dict[str, Any] = {
        "in_channels": state["conv_in.weight"].shape[1],
        "conditioning_channels": state["controlnet_cond_embedding.conv_in.weight"].shape[1],
        "down_block_types": tuple("CrossAttnDownBlock2D" if on else "DownBlock2D" for on in attention),
        "block_out_channels": tuple(channels),
        "layers_per_block": len(block_indices(state, "down_blocks.0.resnets.")),
        "transformer_layers_per_block": tuple(depths),
        "use_linear_projection": linear,
        "attention_head_dim": [max(1, c // HEAD_CHANNELS) for c in channels] if linear else SD1_HEADS,
        "conditioning_embedding_out_channels": (
            state["controlnet_cond_embedding.conv_in.weight"].shape[0],
            *[state[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0] for i in embedding if i % 2]),
    }
    if first is not None:
        config["cross_attention_dim"] = state[
            f"down_blocks.{first}.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape[1]
    if "mid_block.attentions.0.proj_in.weight" not in state:
        config["mid_block_type"] = "UNetMidBlock2D" if "mid_block.resnets.0.conv1.weight" in state else None
    if "add_embedding.linear_1.weight" in state:
        config.update(addition_embed_type="text_time", addition_time_embed_dim=SDXL_TIME_EMBED,
                      projection_class_embeddings_input_dim=state["add_embedding.linear_1.weight"].shape[1])
    return config


def sd3_controlnet_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """SD3ControlNetModel arguments read from diffusers-layout tensor shapes."""
    inner, in_channels, patch, _ = state["pos_embed.proj.weight"].shape
    head_dim = state["transformer_blocks.0.attn.norm_q.weight"].shape[0] if \
        "transformer_blocks.0.attn.norm_q.weight" in state else 64
    positions = state["pos_embed.pos_embed"].shape[1] if "pos_embed.pos_embed" in state else 96 * 96
    return {
        "patch_size": patch, "in_channels": in_channels, "out_channels": in_channels,
        "num_layers": len(block_indices(state, "transformer_blocks.")), "attention_head_dim": head_dim,
        "num_attention_heads": inner // head_dim, "joint_attention_dim": state["context_embedder.weight"].shape[1],
        "caption_projection_dim": state["context_embedder.weight"].shape[0],
        "pooled_projection_dim": state["time_text_embed.text_embedder.linear_1.weight"].shape[1],
        "pos_embed_max_size": int(math.isqrt(positions)),
        "extra_conditioning_channels": state["pos_embed_input.proj.weight"].shape[1] - in_channels,
        "qk_norm": "rms_norm" if "transformer_blocks.0.attn.norm_q.weight" in state else None,
    }


def flux_controlnet_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """FluxControlNetModel arguments read from diffusers-layout tensor shapes."""
    from diffusion.families.flux.loading import flux_rope_axes

    inner, in_channels = state["x_embedder.weight"].shape
    head_dim = state["transformer_blocks.0.attn.norm_q.weight"].shape[0]
    modes = state["controlnet_mode_embedder.weight"].shape[0] if "controlnet_mode_embedder.weight" in state else None
    return {
        "patch_size": 1, "in_channels": in_channels,
        "num_layers": len(block_indices(state, "transformer_blocks.")),
        "num_single_layers": len(block_indices(state, "single_transformer_blocks.")),
        "attention_head_dim": head_dim, "num_attention_heads": inner // head_dim,
        "joint_attention_dim": state["context_embedder.weight"].shape[1],
        "pooled_projection_dim": state["time_text_embed.text_embedder.linear_1.weight"].shape[1],
        "guidance_embeds": "time_text_embed.guidance_embedder.linear_1.weight" in state,
        "axes_dims_rope": flux_rope_axes(head_dim), "num_mode": modes,
        "conditioning_embedding_channels": None,
    }


def _t2i_to_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A full T2I-Adapter in TencentARC's original layout (two resnet blocks per level, `body.{2 * level + j}.`)
    re-keyed to diffusers' T2IAdapter (`adapter.body.{level}.resnets.{j}.`, the level's input conv on its first);
    files already in the diffusers layout as they are."""
    if any(key.startswith("adapter.") for key in state):
        return dict(state)
    converted = {}
    for key, tensor in state.items():
        if key.startswith("body."):
            index, rest = key.removeprefix("body.").split(".", 1)
            level, block = divmod(int(index), 2)
            if rest.startswith(("down_opt.op.", "skep.")):
                raise ValueError("T2I-Adapter with learned downsampling or skip convolutions, which diffusers' "
                                 "T2IAdapter (and this engine) does not run")
            key = f"adapter.body.{level}.{rest}" if rest.startswith("in_conv.") else \
                f"adapter.body.{level}.resnets.{block}.{rest}"
        else:
            key = "adapter." + key
        converted[key] = tensor
    return converted


def t2i_adapter_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """T2IAdapter arguments read from diffusers-layout tensor shapes (ComfyUI tells SDXL adapters by their input
    width: 16x16 unshuffled pixels of one or three channels)."""
    unshuffled = state["adapter.conv_in.weight"].shape[1]
    xl = unshuffled in T2I_XL_INPUTS
    factor = 16 if xl else 8
    channels = [state[f"adapter.body.{level}.resnets.0.block2.weight"].shape[0]
                for level in block_indices(state, "adapter.body.")]
    return {"in_channels": unshuffled // (factor * factor), "channels": channels,
            "num_res_blocks": len(block_indices(state, "adapter.body.0.resnets.")), "downscale_factor": factor,
            "adapter_type": "full_adapter_xl" if xl else "full_adapter"}


def build_network(kind: str, state: Mapping[str, torch.Tensor], pooled: bool = False) -> torch.nn.Module:
    """The diffusers module of a ControlNet of `kind` with the file's tensors (diffusers layout, or the original
    layout for UNet ControlNets); `pooled`: a UNet ControlNet whose residuals are averaged over the image (the
    shuffle ControlNet). ValueError when the tensors do not fit."""
    import diffusers

    if kind == UNET and "controlnet_cond_embedding.conv_in.weight" not in state:
        state = _ldm_to_diffusers(state)
    if kind == T2I:
        state = _t2i_to_diffusers(state)
    builders: dict[str, tuple[str, Callable[[Mapping[str, torch.Tensor]], dict[str, Any]]]] = {
        UNET: ("ControlNetModel", unet_controlnet_config), UNION: ("ControlNetUnionModel", unet_controlnet_config),
        SD3: ("SD3ControlNetModel", sd3_controlnet_config), FLUX: ("FluxControlNetModel", flux_controlnet_config),
        T2I: ("T2IAdapter", t2i_adapter_config)}
    class_name, config_of = builders[kind]
    try:
        config = config_of(state)
        if pooled and kind == UNET:
            config["global_pool_conditions"] = True
        if kind == UNION:
            types, channels = state["task_embedding"].shape
            config.pop("mid_block_type", None)  # always the cross-attention middle block
            config.update(num_control_type=types, num_trans_channel=channels, num_trans_head=UNION_HEADS,
                          num_trans_layer=len(block_indices(state, "transformer_layes.")),
                          num_proj_channel=state["spatial_ch_projs.weight"].shape[0],
                          addition_time_embed_dim=state["control_add_embedding.linear_1.weight"].shape[1] // types)
        with torch.device("meta"):
            network = getattr(diffusers, class_name)(**config)
    except (KeyError, IndexError, ValueError, TypeError) as error:
        raise ValueError(f"{KIND_TITLES[kind]} tensors incomplete or mis-shaped ({error})") from error
    if kind == FLUX and network.controlnet_x_embedder.in_features != state["controlnet_x_embedder.weight"].shape[1]:
        raise ValueError("a FLUX ControlNet with a wider hint input (Alimama's inpainting ControlNet), which this "
                         "engine does not run")
    return load_strict(network, state, KIND_TITLES[kind]).eval().requires_grad_(False)


# -- the CONTROL_NET value and loading ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ControlNet:
    """CONTROL_NET: a ControlNet network of one `kind`; `union_type` is the control type a union ControlNet is
    told to use (SetUnionControlNetType; None: ComfyUI's "auto")."""

    network: torch.nn.Module
    kind: str
    name: str
    union_type: int | None = None

    @property
    def needs_vae(self) -> bool:
        """Whether its hint image is encoded by the VAE first (the transformer families' ControlNets)."""
        return self.kind in (SD3, FLUX)

    @property
    def concat_mask(self) -> bool:
        """Whether it takes a mask channel beside the encoded image (Alimama's SD3 inpainting ControlNet)."""
        if self.kind == SD3:
            return int(self.network.config.extra_conditioning_channels) > 0
        return False

    def with_union_type(self, union_type: int | None) -> "ControlNet":
        return dataclasses.replace(self, union_type=union_type)


def read_state_dict(path: Path, input_name: str) -> dict[str, torch.Tensor]:
    """The tensors of a ControlNet file (pickles read tensors-only, as upscale models are), unwrapped from a
    `state_dict`, `module` or `adapter` entry where a training script saved them one level down."""
    from diffusion.upscale import read_state_dict as read_weights

    state = read_weights(path, input_name)
    for wrapper in ("state_dict", "module", "adapter"):
        if isinstance(state.get(wrapper), dict) and len(state) < 4:
            state = state[wrapper]
    return state


def load_controlnet(models: ModelManager, path: Path, input_name: str = "control_net_name",
                    model: Any = None) -> ControlNet:
    """A ControlNet from a single file (.safetensors, or a pickled .pth read tensors-only), on the manager's
    device and dtype, cached and budgeted by it. A "difference" ControlNet (a `difference` entry; its weights are
    differences from an SD1.x UNet) gets the UNet weights of `model` added, as ComfyUI's DiffControlNetLoader does;
    a file named like ComfyUI's shuffle ControlNets (`*_shuffle`) pools its residuals over the image, as ComfyUI
    does for them."""
    path = Path(path)

    def load() -> ControlNet:
        state = read_state_dict(path, input_name)
        keys = set(state)
        kind = detect_kind(keys)
        if kind is None:
            raise ValueError(f"{input_name}: {path.name} is not a ControlNet this engine runs: this file holds "
                             f"{describe_other(keys)}")
        tensors = {key: tensor for key, tensor in state.items() if torch.is_tensor(tensor) and key != DIFFERENCE}
        if DIFFERENCE in state:
            if model is None:
                raise ValueError(f"{input_name}: {path.name} is a difference ControlNet (differences from a model's "
                                 "weights); load it with DiffControlNetLoader and the model it is for")
            tensors = _with_model_weights(tensors, model, path.name)
        try:
            network = build_network(kind, tensors, pooled=path.stem.endswith(SHUFFLE_SUFFIXES))
        except ValueError as error:
            raise ValueError(f"{input_name}: {path.name}: {error}") from error
        return ControlNet(models.place(network), kind, path.name)

    if DIFFERENCE in _keys_of(path, input_name) and model is not None:  # one version per model it is added to
        return models.cached(f"controlnet-difference-{id(model.network)}", path, input_name, load)
    return models.cached("controlnet", path, input_name, load)


def _keys_of(path: Path, input_name: str) -> set[str]:
    """The tensor names of a .safetensors file from its header; nothing for other files (read when loaded)."""
    if path.suffix.lower() != ".safetensors":
        return set()
    return set(safetensors_keys(path, input_name))


def _with_model_weights(state: dict[str, torch.Tensor], model: Any, file_name: str) -> dict[str, torch.Tensor]:
    """An original-layout difference ControlNet's weights plus the model's UNet weights of the same names."""
    from diffusion.families.ldm_export import UNET_PREFIX, unet_to_ldm

    network = model.network
    try:
        base = unet_to_ldm(network.state_dict(), dict(network.config))
    except KeyError as error:
        raise ValueError(f"model: {file_name} is a difference ControlNet for SD1.x/SD2.x UNets; this model's UNet "
                         f"has no such layout ({error})") from error
    added = {}
    for key, tensor in state.items():
        weights = base.get(UNET_PREFIX + key.removeprefix(LDM_PREFIX)) if key.startswith(LDM_PREFIX) else None
        added[key] = tensor if weights is None else tensor + weights.to(tensor.device, tensor.dtype)
    return added


# -- applying it --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AppliedControl:
    """A ControlNet applied to conditioning (ComfyUI's `control` option): the hint image [B, C, H, W] in 0..1, the
    strength its residuals are multiplied by, the part of the run it acts in (`start_percent`..`end_percent`),
    the VAE that encodes the hint for transformer ControlNets, extra hint channels (an inpainting mask), and the
    control applied before it, whose residuals add to its own."""

    control_net: ControlNet
    hint: torch.Tensor
    strength: float
    start_percent: float = 0.0
    end_percent: float = 1.0
    vae: Any = None
    mask: torch.Tensor | None = None
    previous: "AppliedControl | None" = None

    def chain(self) -> list["AppliedControl"]:
        """This control and those before it, the first applied first."""
        return ([] if self.previous is None else self.previous.chain()) + [self]

    def active(self, sigma: float, percent_to_sigma: Callable[[float], float]) -> bool:
        """Whether it acts at noise level `sigma` (ComfyUI compares with the sigmas of its start and end)."""
        return percent_to_sigma(self.end_percent) <= sigma <= percent_to_sigma(self.start_percent)


def center_resize(images: torch.Tensor, width: int, height: int, method: str = HINT_METHOD) -> torch.Tensor:
    """[B, C, H, W] cropped from the centre to the aspect of width x height, then resized to it (ComfyUI's
    common_upscale with crop "center")."""
    old_height, old_width = images.shape[-2:]
    old_aspect, new_aspect = old_width / old_height, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
    cropped = images.narrow(-2, y, old_height - 2 * y).narrow(-1, x, old_width - 2 * x)
    if cropped.shape[-2:] == (height, width):
        return cropped
    return torch.nn.functional.interpolate(cropped, size=(height, width), mode=method)


def _batched(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """A hint of batch 1 or of the latents' batch repeated (cyclically) to `rows`."""
    if tensor.shape[0] == rows:
        return tensor
    repeats = math.ceil(rows / tensor.shape[0])
    return tensor.repeat(repeats, *[1] * (tensor.ndim - 1))[:rows]


class HintCache:
    """Each control's hint prepared once per latent size and row count: resized, and for transformer ControlNets
    encoded by the VAE into the sampling model's latent space (`latent_format`, ComfyUI's process_in)."""

    def __init__(self, latent_format: Any = None) -> None:
        self.latent_format = latent_format
        self._hints: dict[tuple[int, int, int, int], Any] = {}

    def hint(self, control: AppliedControl, latents: torch.Tensor, batch: int) -> Any:
        height, width = latents.shape[-2:]
        key = (id(control), height, width, batch)
        if key not in self._hints:
            self._hints[key] = _prepared_hint(control, height, width, batch, self.latent_format)
        return self._hints[key]


def _prepared_hint(control: AppliedControl, height: int, width: int, batch: int,
                   latent_format: Any) -> torch.Tensor | list[torch.Tensor]:
    """The hint as the control's network takes it; a T2I-Adapter's features themselves (they depend on the hint
    alone, so they are computed once, as ComfyUI does)."""
    network = control.control_net.network
    if control.control_net.kind == T2I:
        return _adapter_features(control, height, width, batch)
    scale = 8 if control.vae is None else int(control.vae.downscale)
    hint = center_resize(control.hint.float(), width * scale, height * scale)
    if control.control_net.needs_vae:
        if control.vae is None:
            raise ValueError("vae: this ControlNet encodes its image with the VAE; connect the model's VAE to the "
                             "apply node's vae input")
        hint = control.vae.encode(hint.movedim(1, -1))
        if latent_format is not None:
            hint = latent_format.process_in(hint)
        if control.control_net.concat_mask:
            mask = control.mask if control.mask is not None else torch.ones(1, 1, 1, 1)
            mask = center_resize(mask.float().reshape(-1, 1, *mask.shape[-2:]), hint.shape[-1], hint.shape[-2])
            hint = torch.cat([hint, _batched(mask, hint.shape[0])], dim=1)
    return _batched(hint, batch).to(network.device, network.dtype)


def _adapter_features(control: AppliedControl, height: int, width: int, batch: int) -> list[torch.Tensor]:
    """A T2I-Adapter's features of the hint resized to the latents' pixels (rounded up to whole unshuffled
    patches) and, for a one-channel adapter, averaged to grey, as ComfyUI prepares it."""
    network = control.control_net.network
    factor = int(network.config.downscale_factor)
    hint = center_resize(control.hint.float(), math.ceil(width * 8 / factor) * factor,
                         math.ceil(height * 8 / factor) * factor)
    if int(network.config.in_channels) == 1 and hint.shape[1] > 1:
        hint = hint.mean(dim=1, keepdim=True)
    with torch.inference_mode():
        return list(network(_batched(hint, batch).to(network.device, network.dtype)))


def control_output(control: AppliedControl, hint: torch.Tensor, model_input: torch.Tensor, timestep: torch.Tensor,
                   embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> dict[str, list[torch.Tensor]]:
    """One control's residuals (strength applied) for rows of the network call, per network keyword argument: a
    UNet ControlNet's down and mid residuals, a T2I-Adapter's features (added inside the UNet's down blocks), a
    transformer ControlNet's block samples (FLUX: the double-stream and the single-stream blocks')."""
    control_net = control.control_net
    network = control_net.network
    dtype = network.dtype
    rows = model_input.shape[0]
    if control_net.kind == T2I:
        if ("added_cond_kwargs" in inputs) != (network.config.adapter_type == "full_adapter_xl"):
            raise ValueError(f"control_net: {control_net.name} is a T2I-Adapter for "
                             f"{'SDXL' if network.config.adapter_type == 'full_adapter_xl' else 'SD1.x'} models; it "
                             "cannot steer this model")
        return {T2I_RESIDUALS: [feature * control.strength for feature in hint]}
    if control_net.kind in (UNET, UNION):
        extra: dict[str, Any] = {}
        if "added_cond_kwargs" in inputs:
            added = {key: value.to(dtype) for key, value in inputs["added_cond_kwargs"].items()}
            if network.config.addition_embed_type != "text_time":
                raise ValueError("control_net: this ControlNet is for SD1.x/SD2.x UNets; it cannot steer an SDXL model")
            _fit_time_embedding(network, added)
            extra["added_cond_kwargs"] = added
        elif network.config.addition_embed_type == "text_time":
            raise ValueError("control_net: this is an SDXL ControlNet; it steers SDXL models only")
        if control_net.kind == UNION and control_net.union_type is None:
            down, mid = _union_without_type(network, model_input.to(dtype), timestep, embeddings.to(dtype), hint,
                                            control.strength, extra.get("added_cond_kwargs"))
            return {"down_block_additional_residuals": down, "mid_block_additional_residual": [mid]}
        if control_net.kind == UNION:
            types = torch.zeros(rows, int(network.config.num_control_type), device=network.device, dtype=dtype)
            types[:, control_net.union_type] = 1
            extra.update(controlnet_cond=[hint], control_type=types, control_type_idx=[control_net.union_type])
        else:
            extra["controlnet_cond"] = hint
        down, mid = network(model_input.to(dtype), timestep, encoder_hidden_states=embeddings.to(dtype),
                            conditioning_scale=control.strength, return_dict=False, **extra)
        return {"down_block_additional_residuals": list(down), "mid_block_additional_residual": [mid]}
    if control_net.kind == SD3:
        from diffusion.families.sd3.sampling import with_t5_width

        embeddings = with_t5_width(embeddings, int(network.config.joint_attention_dim))
        (samples,) = network(hidden_states=model_input.to(dtype), controlnet_cond=hint,
                             conditioning_scale=control.strength, encoder_hidden_states=embeddings.to(dtype),
                             pooled_projections=inputs["pooled_projections"].to(dtype),
                             timestep=timestep.expand(rows).to(dtype), return_dict=False)
        return {"block_controlnet_hidden_states": list(samples)}
    from diffusion.families.flux.sampling import guidance_left_out, image_ids, pack

    height, width = model_input.shape[-2:]
    with guidance_left_out(network, inputs.get("guidance") if network.config.guidance_embeds else None) as guidance:
        double, single = network(
            hidden_states=pack(model_input.to(dtype)), controlnet_cond=pack(hint), conditioning_scale=control.strength,
            encoder_hidden_states=embeddings.to(dtype), pooled_projections=inputs["pooled_projections"].to(dtype),
            timestep=timestep.expand(rows).to(dtype), guidance=guidance,
            txt_ids=torch.zeros(embeddings.shape[1], 3, device=model_input.device, dtype=dtype),
            img_ids=image_ids(height, width, model_input.device, dtype), return_dict=False)
    return {"controlnet_block_samples": list(double or []), "controlnet_single_block_samples": list(single or [])}


def _union_without_type(network: torch.nn.Module, sample: torch.Tensor, timestep: torch.Tensor,
                        embeddings: torch.Tensor, hint: torch.Tensor, strength: float,
                        added: Mapping[str, torch.Tensor] | None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A union ControlNet told no control type (ComfyUI's "auto"), as ComfyUI runs it: every type off in the time
    embedding, and the hint through the condition embedding alone, without the type tokens' mixing (which
    diffusers' ControlNetUnionModel always does); then the ControlNet's blocks as usual."""
    rows = sample.shape[0]
    emb = network.time_embedding(network.time_proj(timestep.expand(rows)).to(sample.dtype))
    no_types = torch.zeros(rows * int(network.config.num_control_type), device=sample.device)
    emb = emb + network.control_add_embedding(network.control_type_proj(no_types).reshape(rows, -1).to(sample.dtype))
    if added is not None:
        sizes = network.add_time_proj(added["time_ids"].flatten()).reshape(rows, -1).to(sample.dtype)
        emb = emb + network.add_embedding(torch.cat([added["text_embeds"], sizes], dim=-1))
    hidden = network.conv_in(sample) + network.controlnet_cond_embedding(hint)
    residuals = [hidden]
    for block in network.down_blocks:
        if getattr(block, "has_cross_attention", False):
            hidden, outputs = block(hidden_states=hidden, temb=emb, encoder_hidden_states=embeddings)
        else:
            hidden, outputs = block(hidden_states=hidden, temb=emb)
        residuals.extend(outputs)
    hidden = network.mid_block(hidden, emb, encoder_hidden_states=embeddings)
    down = [block(residual) * strength for block, residual in zip(network.controlnet_down_blocks, residuals)]
    return down, network.controlnet_mid_block(hidden) * strength


def _fit_time_embedding(network: torch.nn.Module, added: Mapping[str, torch.Tensor]) -> None:
    """An SDXL ControlNet file does not tell how wide each size number's embedding is (256 in SDXL): it is what
    the model's pooled text embedding leaves of the added embedding's inputs, so it is set from the first call
    (the embedding has no weights)."""
    inputs = network.add_embedding.linear_1.in_features - added["text_embeds"].shape[-1]
    width, remainder = divmod(inputs, added["time_ids"].shape[-1])
    if width <= 0 or remainder:
        raise ValueError(f"control_net: this SDXL ControlNet's added embedding ({inputs} inputs besides the pooled "
                         f"text) does not fit this model's {added['time_ids'].shape[-1]} size numbers")
    network.add_time_proj.num_channels = width


def _as_network_kwargs(merged: dict[str, list[torch.Tensor]]) -> dict[str, Any]:
    """Residual lists as the keyword arguments diffusers' networks take (a tuple, one tensor, None for none)."""
    kwargs: dict[str, Any] = {key: values or None for key, values in merged.items()}
    if "mid_block_additional_residual" in kwargs:
        kwargs["mid_block_additional_residual"] = merged["mid_block_additional_residual"][0]
        kwargs["down_block_additional_residuals"] = tuple(merged["down_block_additional_residuals"])
    return kwargs


def check_family(control: AppliedControl, family: str, family_title: str) -> None:
    """A ValueError naming the input when a control cannot steer a model of `family` (named `family_title`)."""
    for applied in control.chain():
        kind = applied.control_net.kind
        if family not in KIND_FAMILIES[kind]:
            families = " and ".join(KIND_FAMILY_TITLES[name] for name in KIND_FAMILIES[kind])
            raise ValueError(f"positive: {applied.control_net.name} is for {families} models ({KIND_TITLES[kind]}); "
                             f"it cannot steer this {family_title} model")


def network_kwargs(controls: Sequence[AppliedControl | None], batch: int, model_input: torch.Tensor,
                   sigma: float, timestep: torch.Tensor, embeddings: torch.Tensor, inputs: Mapping[str, Any],
                   percent_to_sigma: Callable[[float], float], hints: HintCache,
                   texts: Sequence[torch.Tensor | None] | None = None) -> dict[str, Any]:
    """The network keyword arguments adding the ControlNets' residuals to one call of the network whose rows are
    `len(controls)` entries of `batch` rows each (`controls[i]`: entry i's control, None for none): each entry's
    active controls' residuals summed (chained controls add up), zeros for entries without one; {} when no
    control acts at `sigma`. `texts[i]`: the text entry i's controls read (its `CONTROL_TEXT` option), None for
    the entry's own rows of `embeddings`."""
    per_entry: list[dict[str, list[torch.Tensor]]] = []
    for index, control in enumerate(controls):
        total: dict[str, list[torch.Tensor]] = {}
        for applied in ([] if control is None else control.chain()):
            if not applied.active(sigma, percent_to_sigma):
                continue
            rows = slice(index * batch, (index + 1) * batch)
            hint = hints.hint(applied, model_input, batch)
            text = embeddings[rows] if texts is None or texts[index] is None else \
                _control_text(texts[index], embeddings[rows])
            outputs = control_output(applied, hint, model_input[rows], timestep[rows], text,
                                     _rows_of(inputs, rows, model_input.shape[0]))
            for key, values in outputs.items():  # chained controls add up (a ControlNet and a T2I-Adapter both act)
                total[key] = [a + b for a, b in zip(total[key], values)] if key in total else values
        per_entry.append(total)
    keys = list(dict.fromkeys(key for total in per_entry for key in total))
    merged = {}
    for key in keys:
        template = next(total[key] for total in per_entry if key in total)
        filled = [total.get(key) or [torch.zeros_like(tensor) for tensor in template] for total in per_entry]
        merged[key] = [torch.cat(torch.broadcast_tensors(*parts)) for parts in zip(*filled)]  # pooled ones: 1x1
    return _as_network_kwargs(merged)


def _control_text(text: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """An entry's ControlNet text as its rows of the network call (repeated to their batch, as ComfyUI repeats a
    conditioning to the batch size); a ValueError when another text encoder made it."""
    if text.ndim != 3 or text.shape[-1] != embeddings.shape[-1]:
        raise ValueError(f"conditioning: the ControlNet text (CLIPTextEncodeControlnet) is {text.shape[-1]} wide, the "
                         f"prompt's embeddings {embeddings.shape[-1]}; encode both with the model's CLIP")
    return _batched(text, embeddings.shape[0]).to(embeddings)


def _rows_of(value: Any, rows: slice, total: int) -> Any:
    if isinstance(value, torch.Tensor):
        return value[rows] if value.ndim and value.shape[0] == total else value
    if isinstance(value, Mapping):
        return {key: _rows_of(item, rows, total) for key, item in value.items()}
    return value


def entry_controls(options: Sequence[Mapping[str, Any]], negatives: int) -> list[AppliedControl | None]:
    """The control of each guidance entry (negatives first): its own, and for negative entries without one the
    controls of positives applied with ControlNetApply (`control_apply_to_uncond`), in turn, as ComfyUI fills
    them in."""
    controls = [entry.get("control") for entry in options]
    if negatives == 0 or any(control is not None for control in controls[:negatives]):
        return controls
    shared = [entry["control"] for entry in options[negatives:]
              if entry.get("control") is not None and entry.get("control_apply_to_uncond")
              and "area" not in entry]
    open_negatives = [index for index in range(negatives) if "area" not in options[index]]
    for number, control in enumerate(shared):
        if open_negatives:
            controls[open_negatives[number % len(open_negatives)]] = control
    return controls
