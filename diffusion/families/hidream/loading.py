"""HiDream model files read into diffusers/transformers modules, offline: the transformer alone (ComfyUI's
`hidream_i1_*.safetensors`: diffusers' names, with or without `model.diffusion_model.`; what the shapes do not tell
is in `config.json` beside this module, as ComfyUI fixes it), its four text encoder files (QuadrupleCLIPLoader:
CLIP-L, CLIP-G, T5-XXL and Llama 3.1 8B Instruct in any order, told apart by their tensors; T5 and Llama read on the
first encode), and diffusers HiDreamImagePipeline folders. Its VAE is FLUX's (VAELoader). Knows nothing of nodes."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import quantized
from diffusion.components import DiffusionModel, Vae
from diffusion.contracts import Place
from diffusion.encoders import t5 as t5_files
from diffusion.encoders import text_encoder_files
from diffusion.encoders.clip import TextEncoderSlot
from diffusion.encoders.clip_tokenizer import clip_tokenizer
from diffusion.encoders.llama_tokenizer import llama3_tokenizer_for_vocab
from diffusion.families.hidream.detection import PREFIX, is_llama_encoder
from diffusion.families.hidream.sampling import HIDREAM_SAMPLING
from diffusion.families.hidream.text_encoding import HiDreamClip
from diffusion.files import (
    block_indices,
    config_beside,
    embedding_rows,
    empty_weights,
    public_config,
    read_weights,
    safetensors_keys,
    safetensors_shapes,
    taken,
)
from diffusion.files import scheduler_config as folder_scheduler_config
from diffusion.lazy_module import LazyModule
from diffusion.lora import TEXT_ENCODER, TEXT_ENCODER_2

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "hidream"
CLIP_TYPES = ("hidream",)


def config() -> dict[str, Any]:
    return config_beside(__file__)


def transformer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """HiDreamImageTransformer2DModel arguments: sizes from the tensor shapes, the rest from config.json. Block i
    reads Llama's layer i (the last layer for the blocks after it), as HiDream-I1 does."""
    fixed = config()["transformer"]
    patch = fixed["patch_size"]
    width, patch_features = state["x_embedder.proj.weight"].shape
    double = len(block_indices(state, "double_stream_blocks."))
    single = len(block_indices(state, "single_stream_blocks."))
    first_block = "double_stream_blocks.0" if double else "single_stream_blocks.0"
    return dict(
        patch_size=patch, in_channels=patch_features // patch ** 2,
        out_channels=state["final_layer.linear.weight"].shape[0] // patch ** 2, num_layers=double,
        num_single_layers=single, attention_head_dim=fixed["attention_head_dim"],
        num_attention_heads=width // fixed["attention_head_dim"],
        caption_channels=[state[f"caption_projection.{double + single}.linear.weight"].shape[1],
                          state["caption_projection.0.linear.weight"].shape[1]],
        text_emb_dim=state["p_embedder.pooled_embedder.linear_1.weight"].shape[1],
        num_routed_experts=len(block_indices(state, f"{first_block}.block.ff_i.experts.")),
        num_activated_experts=fixed["num_activated_experts"], axes_dims_rope=tuple(fixed["axes_dims_rope"]),
        max_resolution=tuple(fixed["max_resolution"]),
        llama_layers=[min(block, fixed["llama_layer_count"] - 1) for block in range(double + single)])


def build_transformer(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    from diffusers import HiDreamImageTransformer2DModel

    weights = taken(state, PREFIX)  # the file's tensors move into the model (see files.taken)
    try:
        with empty_weights():
            transformer = HiDreamImageTransformer2DModel(**transformer_config(quantized.shape_view(weights)))
        quantized.load_quantized(transformer, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: HiDream transformer tensors incomplete or mis-shaped ({error})") from error
    return transformer.eval()


def hidream_model(transformer: Any, name: str, scheduler_config: Mapping[str, Any] | None = None) -> DiffusionModel:
    """MODEL of a HiDream transformer: rectified flow, timesteps sigma x 1000, shifted by its scheduler config
    (ModelSamplingSD3 sets the shift, as in ComfyUI's HiDream templates)."""
    return DiffusionModel(transformer, public_config(scheduler_config or config()["scheduler"]), name, FAMILY,
                          HIDREAM_SAMPLING)


def load_diffusion_model(state: Mapping[str, torch.Tensor], name: str, place: Place) -> DiffusionModel:
    """MODEL of a HiDream transformer file (UNETLoader)."""
    return hidream_model(place(build_transformer(state, "unet_name")), name)


def build_llama_encoder(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    """A transformers LlamaModel rebuilt from a Llama 3 file's shapes (`model.*` keys as published, or bare), with
    Llama 3.1's attention head width and rotary settings from config.json."""
    from transformers import LlamaConfig, LlamaModel

    settings = config()["llama"]
    head_dim = settings["head_dim"]
    weights = {key.removeprefix("model."): value for key, value in state.items() if not key.startswith("lm_head.")}
    try:
        vocab, width = weights["embed_tokens.weight"].shape
        model_config = LlamaConfig(
            vocab_size=vocab, hidden_size=width, head_dim=head_dim,
            intermediate_size=weights["layers.0.mlp.gate_proj.weight"].shape[0],
            num_hidden_layers=len(block_indices(weights, "layers.")),
            num_attention_heads=weights["layers.0.self_attn.q_proj.weight"].shape[0] // head_dim,
            num_key_value_heads=weights["layers.0.self_attn.k_proj.weight"].shape[0] // head_dim,
            rms_norm_eps=settings["rms_norm_eps"], max_position_embeddings=settings["max_position_embeddings"],
            rope_parameters=dict(settings["rope_parameters"]), tie_word_embeddings=False)
        with empty_weights():
            model = LlamaModel(model_config)
        quantized.load_quantized(model, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Llama text encoder tensors incomplete or mis-shaped ({error})") from error
    return model.eval()


def llama_part(models: "ModelManager", path: Path, input_name: str) -> tuple[Any, Any]:
    """(the Llama encoder, read on the first encode; its tokenizer), cached per file."""
    def read() -> tuple[Any, Any]:
        vocab = embedding_rows(safetensors_shapes(path, input_name))
        model = LazyModule(lambda: models.place(build_llama_encoder(
            read_weights(path, input_name, models.keeps_fp8_weights), input_name)), input_name)
        return model, llama3_tokenizer_for_vocab(vocab, input_name)

    return models.cached("text_encoder-llama", path, input_name, read)


def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> HiDreamClip:
    """HiDream's CLIP from its text encoder files, in any order: all four (QuadrupleCLIPLoader), or some of CLIP-L,
    CLIP-G, T5-XXL and Llama 3.1 (CLIPLoader/DualCLIPLoader type hidream), the absent ones counted as zeros, as in
    ComfyUI."""
    llama_inputs = [input_name for input_name, path in paths.items()
                    if is_llama_encoder(safetensors_keys(path, input_name))]
    headers = {input_name: text_encoder_files.read_header(path, input_name) for input_name, path in paths.items()
               if input_name not in llama_inputs}
    roles = {**text_encoder_files.file_roles(headers), **{input_name: "llama" for input_name in llama_inputs}}
    kinds = (text_encoder_files.CLIP_L, text_encoder_files.CLIP_G, text_encoder_files.T5, "llama")
    if any(role not in kinds for role in roles.values()) or len(set(roles.values())) != len(roles):
        raise ValueError(f"HiDream takes at most one each of CLIP-L, CLIP-G, T5-XXL and Llama 3.1 8B Instruct (all "
                         f"four: QuadrupleCLIPLoader); found {text_encoder_files.describe_roles(roles)}")
    by_role = {role: input_name for input_name, role in roles.items()}
    family = config()
    slots: dict[str, TextEncoderSlot | None] = {}
    for role, settings, pad, component in (
            (text_encoder_files.CLIP_L, "text_encoder", "tokenizer", TEXT_ENCODER),
            (text_encoder_files.CLIP_G, "text_encoder_2", "tokenizer_2", TEXT_ENCODER_2)):
        input_name = by_role.get(role)
        if input_name is None:
            slots[role] = None
            continue
        part = text_encoder_files.load_part(models, paths[input_name], input_name, role, family[settings])
        slots[role] = TextEncoderSlot(clip_tokenizer(part.vocab_size, family[pad]["pad_token"]), part.model,
                                      component)
    t5_model = t5_tokenizer = llama = llama_tokenizer = None
    if text_encoder_files.T5 in by_role:
        t5_input = by_role[text_encoder_files.T5]
        t5 = text_encoder_files.load_part(models, paths[t5_input], t5_input, text_encoder_files.T5)
        t5_model, t5_tokenizer = t5.model, t5_files.t5_tokenizer_for_vocab(t5.vocab_size, t5_input)
    if "llama" in by_role:
        llama, llama_tokenizer = llama_part(models, paths[by_role["llama"]], by_role["llama"])
    return HiDreamClip(slots[text_encoder_files.CLIP_L], slots[text_encoder_files.CLIP_G], t5_tokenizer, t5_model,
                       llama_tokenizer, llama, "+".join(Path(path).name for path in paths.values()))


def load_folder(folder: Path, name: str, place: Place) -> tuple[DiffusionModel, HiDreamClip, Vae]:
    """MODEL, CLIP and VAE from a diffusers HiDreamImagePipeline folder (its tokenizers come with it); T5 and
    Llama are read on the first encode."""
    from diffusers import AutoencoderKL, HiDreamImageTransformer2DModel
    from transformers import AutoTokenizer, CLIPTextModelWithProjection, LlamaForCausalLM, T5EncoderModel

    folder = Path(folder)
    options = {"local_files_only": True}
    transformer = HiDreamImageTransformer2DModel.from_pretrained(folder, subfolder="transformer", **options)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **options)
    clips = [TextEncoderSlot(AutoTokenizer.from_pretrained(folder, subfolder=tokenizer, **options),
                             place(CLIPTextModelWithProjection.from_pretrained(folder, subfolder=encoder,
                                                                               **options)).eval(), component)
             for encoder, tokenizer, component in (("text_encoder", "tokenizer", TEXT_ENCODER),
                                                   ("text_encoder_2", "tokenizer_2", TEXT_ENCODER_2))]
    t5 = LazyModule(lambda: place(T5EncoderModel.from_pretrained(folder, subfolder="text_encoder_3",
                                                                 **options)).eval(), f"{name}/text_encoder_3")
    llama = LazyModule(lambda: place(LlamaForCausalLM.from_pretrained(folder, subfolder="text_encoder_4",
                                                                      **options)).eval(), f"{name}/text_encoder_4")
    clip = HiDreamClip(*clips, AutoTokenizer.from_pretrained(folder, subfolder="tokenizer_3", **options), t5,
                       AutoTokenizer.from_pretrained(folder, subfolder="tokenizer_4", **options), llama, name)
    return (hidream_model(place(transformer).eval(), name, folder_scheduler_config(folder)), clip,
            Vae(place(vae).eval(), name))
