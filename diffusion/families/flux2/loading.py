"""FLUX.2 model files read into diffusers/transformers modules, offline: the transformer alone (BFL's layout, as
ComfyUI's `flux-2-klein-*.safetensors` have it, through diffusers' converter; or diffusers keys), its VAE
(`flux2-vae.safetensors`: the LDM layout with batch-norm statistics; VAELoader), its text encoder files (CLIPLoader
type flux2, as ComfyUI loads them: Qwen3 for [klein]; for [dev] Mistral Small 3.x with its tekken.json inside, only
the layers FLUX.2 reads built), and diffusers Flux2KleinPipeline and Flux2Pipeline folders. What a file holds is
read from its tensor names and shapes; the scheduler is in `config.json` beside this module. Knows nothing of
nodes."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import ldm, quantized, registry
from diffusion.components import DiffusionModel, PatchedVae
from diffusion.contracts import Place
from diffusion.encoders.tekken import TEKKEN_TENSOR, tekken_bytes, tekken_tokenizer
from diffusion.families.flux2.detection import PREFIX, is_bfl_layout, is_mistral_encoder
from diffusion.families.flux2.sampling import FLUX2_SAMPLING
from diffusion.families.flux2.text_encoding import Flux2Clip, mistral_format, qwen3_format, tokenizer_for_vocab
from diffusion.families.zimage.detection import is_qwen3_encoder
from diffusion.families.zimage.loading import build_qwen3_encoder
from diffusion.files import (
    block_indices,
    config_beside,
    empty_weights,
    pipeline_class,
    public_config,
    read_safetensors,
    read_weights,
    safetensors_keys,
    safetensors_shapes,
    taken,
)
from diffusion.files import scheduler_config as folder_scheduler_config
from diffusion.lazy_module import LazyModule
from diffusion.sampling.model_sampling import ModelSampling

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "flux2"
CLIP_TYPES = ("flux2",)  # CLIPLoader's type for FLUX.2's text encoder
ROPE_AXES = 4  # FLUX.2's rotary embedding has four position axes (frame, row, column, index), a quarter each
# Mistral Small 3.x's text model, as far as its tensor shapes do not tell
MISTRAL_HEAD_DIM = 128  # not hidden size / heads (5120 / 32)
MISTRAL_ROPE_THETA = 1_000_000_000.0
MISTRAL_NORM_EPS = 1e-5
MISTRAL_CONTEXT = 131_072


def config() -> dict[str, Any]:
    return config_beside(__file__)


def transformer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Flux2Transformer2DModel arguments read from diffusers-layout tensor shapes."""
    width, in_channels = state["x_embedder.weight"].shape
    head_dim = state["transformer_blocks.0.attn.norm_q.weight"].shape[0]
    return dict(patch_size=1, in_channels=in_channels, out_channels=state["proj_out.weight"].shape[0],
                num_layers=len(block_indices(state, "transformer_blocks.")),
                num_single_layers=len(block_indices(state, "single_transformer_blocks.")),
                attention_head_dim=head_dim, num_attention_heads=width // head_dim,
                joint_attention_dim=state["context_embedder.weight"].shape[1],
                timestep_guidance_channels=state["time_guidance_embed.timestep_embedder.linear_1.weight"].shape[1],
                mlp_ratio=state["transformer_blocks.0.ff.linear_out.weight"].shape[1] / width,
                axes_dims_rope=(head_dim // ROPE_AXES,) * ROPE_AXES,
                guidance_embeds="time_guidance_embed.guidance_embedder.linear_1.weight" in state)


def build_transformer(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    from diffusers import Flux2Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux2_transformer_checkpoint_to_diffusers

    weights = taken(state, PREFIX)  # the file's tensors move into the model (see files.taken)
    try:
        if is_bfl_layout(weights.keys()):
            weights = convert_flux2_transformer_checkpoint_to_diffusers(weights)
        with empty_weights():
            transformer = Flux2Transformer2DModel(**transformer_config(quantized.shape_view(weights)))
        quantized.load_quantized(transformer, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: FLUX.2 transformer tensors incomplete or mis-shaped ({error})") from error
    return transformer.eval()


def flux2_model(transformer: Any, name: str, scheduler_config: Mapping[str, Any] | None = None) -> DiffusionModel:
    """MODEL of a FLUX.2 transformer: flow matching whose timesteps are sigmas, FLUX's time shift for ComfyUI's
    samplers (the custom samplers take Flux2Scheduler's sigmas)."""
    settings = public_config(scheduler_config or config()["scheduler"])
    schedule = ModelSampling.from_scheduler_config(settings, flow_timestep_multiplier=1.0)
    return DiffusionModel(transformer, settings, name, FAMILY, FLUX2_SAMPLING, schedule_override=schedule)


def load_diffusion_model(state: Mapping[str, torch.Tensor], name: str, place: Place) -> DiffusionModel:
    """MODEL of a FLUX.2 transformer file (UNETLoader)."""
    return flux2_model(place(build_transformer(state, "unet_name")), name)


def build_vae(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    """AutoencoderKLFlux2 from the LDM-layout tensors of FLUX.2's VAE and its batch-norm statistics."""
    from diffusers import AutoencoderKLFlux2
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    try:
        settings = ldm.vae_config(state, "", 1.0)
        arguments = {key: settings[key] for key in (
            "in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
            "layers_per_block", "latent_channels", "sample_size") if key in settings}
        with empty_weights():
            autoencoder = AutoencoderKLFlux2(**arguments)
        weights = convert_ldm_vae_checkpoint(state, dict(settings))
        weights.update({key: state[key] for key in ("bn.running_mean", "bn.running_var")})
        weights["bn.num_batches_tracked"] = state.get("bn.num_batches_tracked", torch.tensor(0))
        autoencoder.load_state_dict(weights, strict=True, assign=True)
    except (KeyError, RuntimeError, IndexError) as error:
        raise ValueError(f"{input_name}: FLUX.2 VAE tensors incomplete or mis-shaped ({error})") from error
    return autoencoder.eval()


def load_vae(state: Mapping[str, torch.Tensor], name: str, place: Place) -> PatchedVae:
    """VAE of a FLUX.2 VAE file (VAELoader): LATENT in ComfyUI's FLUX.2 space (128 channels, 1/16 of the
    image's side)."""
    return PatchedVae(place(build_vae(state, name)), name)


def build_mistral_encoder(state: Mapping[str, torch.Tensor], layer_count: int, input_name: str) -> Any:
    """A transformers MistralModel of the first `layer_count` layers of a Mistral Small 3.x file (`model.*` keys,
    as ComfyUI's files have them; `state` need hold no later layers). Nothing after them is built, the final norm
    included: hidden state `layer_count` is read as the last layer gives it."""
    from transformers import MistralConfig, MistralModel

    weights = {key.removeprefix("model."): value for key, value in state.items()
               if key.startswith("model.") and key != "model.norm.weight"}
    try:
        vocab, width = weights["embed_tokens.weight"].shape
        present = len(block_indices(weights, "layers."))
        if present < layer_count:
            raise ValueError(f"its Mistral has {present} layers; FLUX.2 [dev] reads the output of layer {layer_count}")
        settings = MistralConfig(
            vocab_size=vocab, hidden_size=width, head_dim=MISTRAL_HEAD_DIM, num_hidden_layers=layer_count,
            intermediate_size=weights["layers.0.mlp.gate_proj.weight"].shape[0],
            num_attention_heads=weights["layers.0.self_attn.q_proj.weight"].shape[0] // MISTRAL_HEAD_DIM,
            num_key_value_heads=weights["layers.0.self_attn.k_proj.weight"].shape[0] // MISTRAL_HEAD_DIM,
            rms_norm_eps=MISTRAL_NORM_EPS, sliding_window=None, max_position_embeddings=MISTRAL_CONTEXT,
            rope_parameters={"rope_type": "default", "rope_theta": MISTRAL_ROPE_THETA})
        with empty_weights():
            model = MistralModel(settings)
        model.norm = torch.nn.Identity()
        quantized.load_quantized(model, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Mistral text encoder tensors incomplete or mis-shaped ({error})") from error
    except ValueError as error:
        raise ValueError(f"{input_name}: {error}") from error
    return model.eval()


def _needed_mistral_tensor(layer_count: int) -> Any:
    """Which of a Mistral file's tensors FLUX.2 [dev] uses: the embedding and the first `layer_count` layers."""
    def needed(key: str) -> bool:
        if key.startswith("model.layers."):
            return int(key.split(".")[2]) < layer_count
        return key.startswith("model.") and key != "model.norm.weight"

    return needed


def _mistral_clip(models: "ModelManager", path: Path, input_name: str) -> Flux2Clip:
    form = mistral_format()
    layer_count = max(form.text_layers)
    tekken = read_safetensors(path, input_name, keep=lambda key: key == TEKKEN_TENSOR)[TEKKEN_TENSOR]
    tokenizer = tekken_tokenizer(tekken_bytes(tekken), input_name)
    model = LazyModule(lambda: models.place(build_mistral_encoder(
        read_weights(path, input_name, models.keeps_fp8_weights, keep=_needed_mistral_tensor(layer_count)),
        layer_count, input_name)), input_name)
    return Flux2Clip(tokenizer, model, Path(path).name, form)


def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> Flux2Clip:
    """FLUX.2's CLIP from its text encoder file (CLIPLoader type flux2): Qwen3 for [klein], Mistral Small 3.x with
    its tekken.json inside (ComfyUI's `mistral_3_small_flux2_*` files) for [dev]; the encoder is read on the first
    encode."""
    (input_name, path), *others = paths.items()
    if others:
        raise ValueError(f"type flux2 takes one text encoder file; got {len(paths)}")

    def read() -> Flux2Clip:
        keys = safetensors_keys(path, input_name)
        if is_mistral_encoder(keys):
            return _mistral_clip(models, path, input_name)
        if not is_qwen3_encoder(keys):
            raise ValueError(
                f"{input_name}: type flux2 runs FLUX.2 [klein] with its Qwen3 text encoder, or FLUX.2 [dev] with "
                f"Mistral Small 3 carrying its tokenizer ({TEKKEN_TENSOR}, as ComfyUI's mistral_3_small_flux2 "
                f"files do); {Path(path).name} holds {registry.describe_other_file(keys)}")
        shapes = safetensors_shapes(path, input_name)
        vocab, width = next(shape for key, shape in shapes.items() if key.endswith("embed_tokens.weight"))
        model = LazyModule(lambda: models.place(build_qwen3_encoder(
            read_weights(path, input_name, models.keeps_fp8_weights), input_name)), input_name)
        return Flux2Clip(tokenizer_for_vocab(vocab, input_name), model, Path(path).name, qwen3_format(width))

    return models.cached("flux2-text-encoder", path, input_name, read)  # its own kind: the value is a CLIP


def load_folder(folder: Path, name: str, place: Place) -> tuple[DiffusionModel, Flux2Clip, PatchedVae]:
    """MODEL, CLIP and VAE from a diffusers Flux2KleinPipeline folder (Qwen3) or Flux2Pipeline folder (FLUX.2
    [dev]: Mistral3ForConditionalGeneration, whose language model is read); the tokenizer comes with it, the text
    encoder is read on the first encode."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, Mistral3ForConditionalGeneration

    folder = Path(folder)
    transformer = Flux2Transformer2DModel.from_pretrained(folder, subfolder="transformer", local_files_only=True)
    vae = AutoencoderKLFlux2.from_pretrained(folder, subfolder="vae", local_files_only=True)
    dev = pipeline_class(folder) == "Flux2Pipeline"
    encoder_class = Mistral3ForConditionalGeneration if dev else AutoModelForCausalLM
    text_encoder = LazyModule(lambda: place(encoder_class.from_pretrained(  # read on the first encode
        folder, subfolder="text_encoder", local_files_only=True)).eval(), f"{name}/text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    width = int(transformer.config.joint_attention_dim) // len(qwen3_format(0).text_layers)
    form = mistral_format() if dev else qwen3_format(width)
    return (flux2_model(place(transformer).eval(), name, folder_scheduler_config(folder)),
            Flux2Clip(tokenizer, text_encoder, name, form), PatchedVae(place(vae).eval(), name))
