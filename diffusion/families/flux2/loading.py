"""FLUX.2 model files read into diffusers/transformers modules, offline: the transformer alone (BFL's layout, as
ComfyUI's `flux-2-klein-*.safetensors` have it, through diffusers' converter; or diffusers keys), its VAE
(`flux2-vae.safetensors`: the LDM layout with batch-norm statistics; VAELoader), its Qwen3 text encoder file
(CLIPLoader type flux2, as ComfyUI loads FLUX.2 [klein]'s), and diffusers Flux2KleinPipeline folders. What a file
holds is read from its tensor names and shapes; the scheduler is in `config.json` beside this module. FLUX.2 [dev]'s
Mistral text encoder is not read here (its tokenizer is not in its file). Knows nothing of nodes."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import ldm, registry
from diffusion.components import DiffusionModel, PatchedVae
from diffusion.contracts import Place
from diffusion.families.flux2.detection import PREFIX, is_bfl_layout
from diffusion.families.flux2.sampling import FLUX2_SAMPLING
from diffusion.families.flux2.text_encoding import Flux2Clip, tokenizer_for_vocab, tokens_key
from diffusion.families.zimage.detection import is_qwen3_encoder
from diffusion.families.zimage.loading import build_qwen3_encoder
from diffusion.files import block_indices, config_beside, empty_weights, public_config, read_safetensors, taken
from diffusion.files import scheduler_config as folder_scheduler_config
from diffusion.lazy_module import LazyModule
from diffusion.sampling.model_sampling import ModelSampling

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "flux2"
CLIP_TYPES = ("flux2",)  # CLIPLoader's type for FLUX.2's text encoder
ROPE_AXES = 4  # FLUX.2's rotary embedding has four position axes (frame, row, column, index), a quarter each


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
            transformer = Flux2Transformer2DModel(**transformer_config(weights))
        transformer.load_state_dict(weights, strict=True, assign=True)
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


def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> Flux2Clip:
    """FLUX.2 [klein]'s CLIP from its Qwen3 file (CLIPLoader type flux2); the encoder is read on the first
    encode."""
    (input_name, path), *others = paths.items()
    if others:
        raise ValueError(f"type flux2 takes one text encoder file; got {len(paths)}")

    def read() -> Flux2Clip:
        state = read_safetensors(path, input_name)
        if not is_qwen3_encoder(state):
            raise ValueError(f"{input_name}: type flux2 runs FLUX.2 [klein], whose text encoder is Qwen3 (FLUX.2 "
                             f"[dev]'s Mistral is not supported); {Path(path).name} holds "
                             f"{registry.describe_other_file(state.keys())}")
        vocab, width = next(value for key, value in state.items() if key.endswith("embed_tokens.weight")).shape
        model = LazyModule(lambda: models.place(build_qwen3_encoder(read_safetensors(path, input_name),
                                                                    input_name)), input_name)
        return Flux2Clip(tokenizer_for_vocab(vocab, input_name), model, Path(path).name, tokens_key(width))

    return models.cached("flux2-text-encoder", path, input_name, read)  # its own kind: the value is a CLIP


def load_folder(folder: Path, name: str, place: Place) -> tuple[DiffusionModel, Flux2Clip, PatchedVae]:
    """MODEL, CLIP and VAE from a diffusers Flux2KleinPipeline folder (its tokenizer comes with it)."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    transformer = Flux2Transformer2DModel.from_pretrained(folder, subfolder="transformer", local_files_only=True)
    vae = AutoencoderKLFlux2.from_pretrained(folder, subfolder="vae", local_files_only=True)
    text_encoder = LazyModule(lambda: place(AutoModelForCausalLM.from_pretrained(  # read on the first encode
        folder, subfolder="text_encoder", local_files_only=True)).eval(), f"{name}/text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    width = int(transformer.config.joint_attention_dim) // len(config()["text_layers"])
    return (flux2_model(place(transformer).eval(), name, folder_scheduler_config(folder)),
            Flux2Clip(tokenizer, text_encoder, name, tokens_key(width)), PatchedVae(place(vae).eval(), name))
