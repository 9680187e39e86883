"""Text encoder files as ComfyUI's CLIP loaders take them, and CLIP weights in ComfyUI's layout.

- Which encoder a file holds (`file_roles`): a T5 encoder, or a CLIP text model whose role is read as ComfyUI reads
  it, from the layer count (32 layers: OpenCLIP-G, 24: OpenCLIP-H, fewer: CLIP-L); two CLIPs that this does not
  tell apart (small test models) are told apart by width and then depth, the smaller being CLIP-L.
- Building a transformers CLIP text model from such a file (`build_clip`), keys with or without `text_model.`, and
  reading one file for a role through the model manager's cache (`load_part`; T5 lazily).
- The weights of a CLIP's parts under ComfyUI's part names (`clip_l`, `clip_g`, `clip_h`, `t5xxl`) and key names
  (`comfy_part_weights`): what CLIPSave writes (`comfy_files`) and what the CLIP merges pair up (`merge_clips`,
  one part at a time with `merged_module`). A CLIP value offers its parts with `parts()` / `with_parts()`.

Knows nothing of nodes, families or folders.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Mapping

import torch

from diffusion.encoders.clip import fit_keys
from diffusion.encoders.t5 import build_t5_encoder, is_t5_encoder, t5_vocab_size
from diffusion.encoders.tekken import TEKKEN_TENSOR
from diffusion.files import (
    block_indices,
    empty_weights,
    load_strict,
    read_safetensors,
    read_weights,
    safetensors_keys,
    safetensors_shapes,
)
from diffusion.lazy_module import LazyModule, resolve

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

T5 = "t5xxl"
CLIP_L, CLIP_G, CLIP_H = "clip_l", "clip_g", "clip_h"
QWEN3 = "qwen3"  # a Qwen3 language model (Z-Image's text encoder)
QWEN3_VL = "qwen3vl"  # a Qwen3 language model with Qwen3-VL's vision tower (Qwen-Image 2.1's text encoder)
QWEN3_VL_VISION = "deepstack_merger_list.0.norm.weight"  # a tensor of Qwen3-VL's vision tower, no other's
PART_NAMES = (CLIP_L, CLIP_G, CLIP_H, T5)  # ComfyUI's prefixes of a CLIP's parts, in CLIPSave's order
CLIP_G_LAYERS, CLIP_H_LAYERS = 31, 23  # ComfyUI's tests: layer 30 exists (OpenCLIP-G), layer 22 (OpenCLIP-H)
NOT_MERGED = (".position_ids", ".logit_scale")  # ComfyUI's CLIP merges leave these alone
T5_INPUT_EMBEDDING = "encoder.embed_tokens.weight"  # transformers' copy of T5's `shared.weight` (tied)


def _clip_prefix(keys: Collection[str]) -> str | None:
    for prefix in ("text_model.", ""):
        if prefix + "embeddings.token_embedding.weight" in keys:
            return prefix
    return None


def clip_layer_count(keys: Collection[str]) -> int:
    prefix = _clip_prefix(keys) or ""
    return len(block_indices(keys, prefix + "encoder.layers."))


def file_role(keys: Collection[str]) -> str | None:
    """The role of one text encoder file from its tensor names alone: T5, Qwen3-VL, Qwen3, CLIP-G, CLIP-H or CLIP-L;
    None when it is no text encoder these roles name (CLIP or T5 in the transformers layout, Qwen3)."""
    keys = set(keys)
    if is_t5_encoder(dict.fromkeys(keys)):
        return T5
    if any(key.endswith("layers.0.self_attn.q_norm.weight") for key in keys):
        return QWEN3_VL if any(key.endswith(QWEN3_VL_VISION) for key in keys) else QWEN3
    if _clip_prefix(keys) is None:
        return None
    layers = clip_layer_count(keys)
    return CLIP_G if layers >= CLIP_G_LAYERS else CLIP_H if layers >= CLIP_H_LAYERS else CLIP_L


def describe_language_model(keys: Collection[str]) -> str | None:
    """A language model used as a text encoder, in words with the loader that takes it, from its tensor names:
    Qwen3-VL (Qwen3 with its vision tower), Qwen3 (per-head query norms), Qwen2.5-VL (biased query projections),
    Gemma 2 (a norm before and after each feed-forward), Mistral with its tekken.json, Llama 3 (none of those
    marks); None for other files."""
    def has(suffix: str) -> bool:
        return any(key.endswith(suffix) for key in keys)

    if TEKKEN_TENSOR in keys:
        return "a Mistral text encoder (FLUX.2 [dev]'s: load it with CLIPLoader type flux2)"
    if has("layers.0.self_attn.q_norm.weight") and has(QWEN3_VL_VISION):
        return "a Qwen3-VL text encoder (Qwen-Image 2.1's: load it with CLIPLoader type qwen_image)"
    if has("layers.0.self_attn.q_norm.weight"):
        return "a Qwen3 text encoder (Z-Image's: load it with CLIPLoader type lumina2)"
    if has("layers.0.self_attn.q_proj.bias"):
        return "a Qwen2.5-VL text encoder (Qwen-Image's: load it with CLIPLoader type qwen_image)"
    if has("layers.0.pre_feedforward_layernorm.weight"):
        return "a Gemma 2 text encoder (Lumina 2's: load it with CLIPLoader type lumina2)"
    if has("layers.0.self_attn.q_proj.weight") and has("layers.0.mlp.gate_proj.weight"):
        return "a Llama 3 text encoder (HiDream's: load it with QuadrupleCLIPLoader)"
    return None


def read_header(path: Path, input_name: str) -> tuple[list[str], int | None]:
    """A file's tensor names and, for a CLIP, its width, from the header alone (no tensor data)."""
    from safetensors import SafetensorError, safe_open

    keys = safetensors_keys(path, input_name)
    prefix = _clip_prefix(keys)
    if prefix is None:
        return keys, None
    try:
        with safe_open(str(path), framework="pt") as file:
            shape = file.get_slice(prefix + "embeddings.token_embedding.weight").get_shape()
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{input_name}: {Path(path).name} is not a readable safetensors file ({error})") from error
    return keys, int(shape[1])


def file_roles(headers: Mapping[str, tuple[Collection[str], int | None]]) -> dict[str, str]:
    """Input name -> role of each file, from its `read_header`; a ValueError naming the input of a file that is no
    text encoder. Two CLIP files of one role (small models) are CLIP-L and CLIP-G by width, the narrower CLIP-L
    (of equally wide ones the one with fewer layers, then the first given)."""
    roles = {}
    for input_name, (keys, _) in headers.items():
        role = file_role(keys)
        if role is None:
            raise ValueError(f"{input_name}: not a text encoder this engine reads (a CLIP or T5 text encoder in the "
                             "transformers layout)")
        roles[input_name] = role
    clips = [input_name for input_name, role in roles.items() if role != T5]
    if len(clips) == 2 and roles[clips[0]] == roles[clips[1]]:
        narrower, wider = sorted(clips, key=lambda input_name: (headers[input_name][1] or 0,
                                                                 clip_layer_count(headers[input_name][0])))
        roles[narrower], roles[wider] = CLIP_L, CLIP_G
    return roles


def describe_roles(roles: Mapping[str, str]) -> str:
    return ", ".join(f"{input_name}: {role}" for input_name, role in roles.items())


def build_clip(state: Mapping[str, torch.Tensor], settings: Mapping[str, Any], input_name: str,
               projection: bool = True, drop_layers: int = 0) -> Any:
    """A transformers CLIPTextModelWithProjection (or CLIPTextModel without `projection`) from a CLIP file's
    tensors, its architecture read from their shapes; `settings` gives what shapes do not tell (`hidden_act`,
    `layer_norm_eps`, `head_channels`). A file without a projection gets the identity, as diffusers does.
    `drop_layers` leaves the last layers out (SD2 reads the penultimate layer as diffusers keeps it). ComfyUI's
    `logit_scale` is left out, and the [width, projection] `text_projection` of files from older ComfyUI versions is
    read as ComfyUI reads it (transposed)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    prefix = _clip_prefix(state.keys())
    if prefix is None:
        raise ValueError(f"{input_name}: not a CLIP text encoder file")
    weights = {key.removeprefix(prefix) if not key.startswith("text_projection") else key: tensor
               for key, tensor in state.items()
               if (key.startswith(prefix) or key.startswith("text_projection")) and key != "logit_scale"}
    if "text_projection" in weights:
        weights["text_projection.weight"] = weights.pop("text_projection").T.contiguous()
    try:
        vocab_size, width = weights["embeddings.token_embedding.weight"].shape
        layers = len(block_indices(weights, "encoder.layers.")) - drop_layers
        projection_weight = weights.get("text_projection.weight")
        config = CLIPTextConfig(
            hidden_act=settings["hidden_act"], layer_norm_eps=settings["layer_norm_eps"], vocab_size=vocab_size,
            hidden_size=width, intermediate_size=weights["encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=layers, num_attention_heads=max(1, width // settings["head_channels"]),
            max_position_embeddings=weights["embeddings.position_embedding.weight"].shape[0],
            projection_dim=width if projection_weight is None else projection_weight.shape[0],
            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1)
    except (KeyError, IndexError) as error:
        raise ValueError(f"{input_name}: CLIP text encoder tensors incomplete ({error})") from error
    dropped = tuple(f"encoder.layers.{index}." for index in range(layers, layers + drop_layers))
    weights = {key: tensor for key, tensor in weights.items() if not key.startswith(dropped)}
    if projection and projection_weight is None:
        weights["text_projection.weight"] = torch.eye(width)
    if not projection:
        weights.pop("text_projection.weight", None)
    with empty_weights():
        model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    try:
        return load_strict(model, fit_keys(weights, model), "CLIP text encoder").eval()
    except ValueError as error:
        raise ValueError(f"{input_name}: {error}") from error


@dataclass(frozen=True)
class LoadedPart:
    """One text encoder file read for a role: the model (a `LazyModule` for T5, read on the first encode) and
    its vocabulary size (for the tokenizer, which the family picks)."""

    role: str
    model: Any
    vocab_size: int


def load_part(models: "ModelManager", path: Path, input_name: str, role: str,
              settings: Mapping[str, Any] | None = None, projection: bool = True, drop_layers: int = 0) -> LoadedPart:
    """The encoder in `path` for `role`, cached by the model manager per file and build (so the same CLIP-L file
    read by two families' loaders the same way is one model). A T5 is read only when a prompt is first encoded
    and can be freed after encoding."""
    path = Path(path)
    if role == T5:
        def load_t5() -> LoadedPart:
            try:
                vocab_size = t5_vocab_size(safetensors_shapes(path, input_name))
            except KeyError as error:
                raise ValueError(f"{input_name}: {path.name}: no T5 token embedding ({error})") from error
            model = LazyModule(lambda: models.place(build_t5_encoder(
                read_weights(path, input_name, models.keeps_fp8_weights), input_name)), input_name)
            return LoadedPart(role, model, vocab_size)

        return models.cached("text_encoder-t5", path, input_name, load_t5)
    if settings is None:
        raise ValueError(f"{input_name}: CLIP settings missing for {role}")

    def load_clip() -> LoadedPart:
        model = models.place(build_clip(read_safetensors(path, input_name), settings, input_name, projection,
                                        drop_layers))
        return LoadedPart(role, model, int(model.config.vocab_size))

    kind = f"text_encoder-{role}{'-projection' if projection else ''}{f'-less{drop_layers}' if drop_layers else ''}"
    return models.cached(kind, path, input_name, load_clip)


# ---------------------------------------------------------------- weights in ComfyUI's layout (CLIPSave, merges)

def comfy_key(part: str, key: str) -> str | None:
    """The name ComfyUI's text encoder files give a module tensor (`text_model.…`, `text_projection.weight`; T5's
    `encoder.…`, `shared.weight`); None for what they leave out (position ids, T5's tied input embedding)."""
    if key.endswith("position_ids") or (part == T5 and key == T5_INPUT_EMBEDDING):
        return None
    if part != T5 and not key.startswith(("text_model.", "text_projection")):
        return "text_model." + key
    return key


def comfy_part_weights(part: str, module: Any) -> dict[str, torch.Tensor]:
    """One part's tensors under ComfyUI's names (`comfy_key`); the module's own tensors, not copies."""
    weights = {}
    for key, tensor in resolve(module).state_dict().items():
        name = comfy_key(part, key)
        if name is not None:
            weights[name] = tensor
    return weights


def clip_parts(clip: Any, input_name: str) -> dict[str, Any]:
    """A CLIP's encoders under ComfyUI's part names, with the LoRAs it carries merged into their weights (as
    ComfyUI patches weights before saving or merging); a ValueError naming the input for a CLIP without them."""
    if not callable(getattr(clip, "parts", None)):
        raise ValueError(f"{input_name}: this {type(clip).__name__} text encoder does not expose its weights")
    parts = clip.parts()
    if not clip.loras:
        return parts
    from diffusion.merging import effective_state_dict, network_with

    components = {id(module): component for component, module in clip.lora_modules()}
    return {part: module if id(module) not in components else
            network_with(module, effective_state_dict(module, components[id(module)], clip.loras))
            for part, module in parts.items()}


def with_clip_parts(clip: Any, parts: Mapping[str, Any]) -> Any:
    """`clip` computing with these encoders (by part name) and no LoRAs (those of `clip_parts` are merged in)."""
    return dataclasses.replace(clip.with_parts(parts), loras=())


def merged_module(part: str, base: Any, other: Any, base_weight: float, other_weight: float) -> Any:
    """A new module of `base`'s architecture whose tensors are `base_weight * base + other_weight * other` in
    float32, stored in `base`'s precision, where `other` has the tensor under the same name and shape (ComfyUI's
    key patches; others stay `base`'s, unscaled and shared, not copied), position ids and logit scales excepted.
    Neither input changes. A `LazyModule` (T5) gives a `LazyModule` merged when first used."""
    if isinstance(base, LazyModule) or isinstance(other, LazyModule):
        return LazyModule(lambda: merged_module(part, resolve(base), resolve(other), base_weight, other_weight),
                          f"{base.name if isinstance(base, LazyModule) else part} (merged)")
    from diffusion.merging import network_with

    other_weights = comfy_part_weights(part, other)
    merged_by_name: dict[str, torch.Tensor] = {}
    state = {}
    with torch.no_grad():
        for key, tensor in base.named_parameters(remove_duplicate=False):
            # T5's input embedding is its `shared.weight` (one merged tensor for both, so they stay tied)
            name = "shared.weight" if part == T5 and key == T5_INPUT_EMBEDDING else comfy_key(part, key)
            source = None if name is None or name.endswith(NOT_MERGED) else other_weights.get(name)
            if source is None or source.shape != tensor.shape:
                continue
            if name not in merged_by_name:
                merged_by_name[name] = (tensor.float() * base_weight
                                        + source.to(tensor.device, torch.float32) * other_weight).to(tensor.dtype)
            state[key] = merged_by_name[name]
    return network_with(base, state)


def matching_parts(base: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
    """The parts both CLIPs have that share at least one tensor name and shape (a T5 not read yet is taken to
    match another T5: it is read only when a prompt is encoded)."""
    found = []
    for part in base:
        if part not in other:
            continue
        if isinstance(base[part], LazyModule) or isinstance(other[part], LazyModule):
            found.append(part)
            continue
        base_weights, other_weights = comfy_part_weights(part, base[part]), comfy_part_weights(part, other[part])
        if any(key in other_weights and other_weights[key].shape == tensor.shape
               for key, tensor in base_weights.items()):
            found.append(part)
    return found


def merge_clips(clip1: Any, clip2: Any, weight1: float, weight2: float) -> Any:
    """clip1 with each encoder that clip2 also has merged: `weight1 * clip1 + weight2 * clip2` per tensor (see
    `merged_module`); encoders only clip1 has stay as they are, as in ComfyUI (which also leaves clip1 unchanged
    when the two share nothing). LoRAs on either are merged in first."""
    parts1, parts2 = clip_parts(clip1, "clip1"), clip_parts(clip2, "clip2")
    merged = {part: merged_module(part, parts1[part], parts2[part], weight1, weight2)
              for part in matching_parts(parts1, parts2)}
    return with_clip_parts(clip1, {**parts1, **merged})


def comfy_files(clip: Any) -> dict[str, dict[str, torch.Tensor]]:
    """What CLIPSave writes: part name -> that encoder's tensors in ComfyUI's layout, contiguous on the CPU, LoRAs
    merged in. SD2's OpenCLIP-H is refused: it is loaded without its last layer (SD2 never reads it), so no
    complete file can be written from it."""
    files = {}
    parts = clip_parts(clip, "clip")
    for part, module in sorted(parts.items(), key=lambda item: PART_NAMES.index(item[0])):
        if part == CLIP_H:
            raise ValueError("clip: SD2's OpenCLIP-H text encoder is loaded without its last layer (SD2 reads the "
                             "penultimate one), so it cannot be saved as a complete text encoder file")
        files[part] = {key: tensor.detach().to("cpu").contiguous()
                       for key, tensor in comfy_part_weights(part, module).items()}
    return files
