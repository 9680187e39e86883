"""SD2.1 unCLIP (nodes/sd_unclip.py; diffusion/families/sd: detection, loading, sampling): the nodes' contracts
against ComfyUI's (nodes.py unCLIPCheckpointLoader and unCLIPConditioning); a tiny SD2.1-unCLIP checkpoint in the
real LDM key layout (UNet with `label_emb`, OpenCLIP-layout image encoder under `embedder.model.visual.`, noise
augmentor buffers) loaded through unCLIPCheckpointLoader; the UNet's class-embedding input checked against diffusers'
StableUnCLIPImg2ImgPipeline.noise_image_embeddings with ComfyUI's noise (the sampling seed minus 10) and against
ComfyUI's augmentation formula by hand; ComfyUI's zeros for entries without images and its merge of several; the
errors; and an API workflow through the engine."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

import nodes
from diffusion.encoders.clip_vision import ClipVisionOutput
from diffusion.families import ldm_export
from diffusion.families.sd import demo as tiny
from diffusion.families.sd import detection, sampling
from diffusion.sampling.ksampler import DIFFUSERS_SCHEDULER, ksample
from nodes.clip_vision import CLIPVisionEncode
from nodes.conditioning import CLIPTextEncode
from nodes.latent import EmptyLatentImage
from nodes.sd_unclip import unCLIPCheckpointLoader, unCLIPConditioning
from tests.nodes.family_workflows import run_workflow

EMBED = 16  # the tiny image embedding's width (ViT-H's is 1024, ViT-L's 768)
CHECKPOINT = "tiny-sd21-unclip.safetensors"
PLAIN = "tiny-sd2.safetensors"

# node: (category, RETURN_TYPES, FUNCTION, the inputs in order: link type or (FLOAT, default, min, max, step))
COMFYUI_CONTRACTS = {
    "unCLIPCheckpointLoader": ("loaders", ("MODEL", "CLIP", "VAE", "CLIP_VISION"), "load_checkpoint",
                               [("ckpt_name", "COMBO")]),
    "unCLIPConditioning": ("conditioning", ("CONDITIONING",), "apply_adm", [
        ("conditioning", "CONDITIONING"), ("clip_vision_output", "CLIP_VISION_OUTPUT"),
        ("strength", ("FLOAT", 1.0, -10.0, 10.0, 0.01)), ("noise_augmentation", ("FLOAT", 0.0, 0.0, 1.0, 0.01))]),
}


def _contract(node_class: type) -> tuple:
    inputs = []
    for name, (kind, options) in node_class.INPUT_TYPES()["required"].items():
        if isinstance(kind, list):
            inputs.append((name, "COMBO"))
        elif kind == "FLOAT":
            inputs.append((name, (kind, options["default"], options["min"], options["max"], options["step"])))
        else:
            inputs.append((name, kind))
    return node_class.CATEGORY, node_class.RETURN_TYPES, node_class.FUNCTION, inputs


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(unclip_env, name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == name  # ComfyUI has no display names for them
    assert node_class.DESCRIPTION and len(node_class.OUTPUT_TOOLTIPS) == len(node_class.RETURN_TYPES)


# -- a tiny SD2.1-unCLIP checkpoint in the original layout ----------------------------------------------------------


def _unclip_unet(seed: int):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    attention = (True, True, True, False)  # SD2's tiny layout (diffusion.families.sd.demo), plus the class embedding
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(64, 64, 64, 64),
        down_block_types=tuple("CrossAttnDownBlock2D" if on else "DownBlock2D" for on in attention),
        up_block_types=tuple("CrossAttnUpBlock2D" if on else "UpBlock2D" for on in reversed(attention)),
        cross_attention_dim=64, attention_head_dim=[1, 1, 1, 1], use_linear_projection=True, upcast_attention=True,
        class_embed_type="projection", projection_class_embeddings_input_dim=2 * EMBED).eval()


def _vision_model(seed: int):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=16,
                              image_size=32, patch_size=8, projection_dim=EMBED, hidden_act="gelu",
                              layer_norm_eps=1e-5)
    return CLIPVisionModelWithProjection(config).eval()


def _open_clip_visual(model) -> dict[str, torch.Tensor]:
    """transformers' CLIP vision weights in OpenCLIP's `visual.*` layout (as the unCLIP checkpoints hold them)."""
    state = model.state_dict()
    out = {"conv1.weight": state["vision_model.embeddings.patch_embedding.weight"],
           "class_embedding": state["vision_model.embeddings.class_embedding"],
           "positional_embedding": state["vision_model.embeddings.position_embedding.weight"],
           "proj": state["visual_projection.weight"].t().contiguous()}
    for ours, theirs in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for kind in ("weight", "bias"):
            out[f"{ours}.{kind}"] = state[f"vision_model.{theirs}.{kind}"]
    for index in range(model.config.num_hidden_layers):
        layer, block = f"vision_model.encoder.layers.{index}.", f"transformer.resblocks.{index}."
        for kind in ("weight", "bias"):
            out[f"{block}attn.in_proj_{kind}"] = torch.cat(
                [state[f"{layer}self_attn.{name}_proj.{kind}"] for name in ("q", "k", "v")])
            for ours, theirs in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                                 ("attn.out_proj", "self_attn.out_proj"), ("mlp.c_fc", "mlp.fc1"),
                                 ("mlp.c_proj", "mlp.fc2")):
                out[f"{block}{ours}.{kind}"] = state[f"{layer}{theirs}.{kind}"]
    return out


@dataclasses.dataclass(frozen=True)
class TinyUnclip:
    components: tiny.TinyComponents
    vision: object
    path: Path


def _write_unclip_checkpoint(path: Path) -> TinyUnclip:
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file

    components = dataclasses.replace(tiny.build_tiny_components("sd2", seed=5, v_prediction=True),
                                     unet=_unclip_unet(8))
    vision = _vision_model(9)
    unet = dict(components.unet.state_dict())
    label = {f"label_emb.0.{index}.{kind}": unet.pop(f"class_embedding.linear_{number}.{kind}")
             for number, index in ((1, 0), (2, 2)) for kind in ("weight", "bias")}
    state = {**tiny.ldm_state_dict(dataclasses.replace(components, unet=_Stripped(unet, components.unet.config))),
             **{ldm_export.UNET_PREFIX + key: tensor for key, tensor in label.items()},
             **{detection.UNCLIP_VISION + key: tensor for key, tensor in _open_clip_visual(vision).items()}}
    augmentor = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    state["noise_augmentor.betas"] = augmentor.betas  # what the real files carry besides (ComfyUI ignores them)
    state["noise_augmentor.alphas_cumprod"] = augmentor.alphas_cumprod
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: tensor.detach().contiguous() for key, tensor in state.items()}, str(path))
    return TinyUnclip(components, vision, path)


@dataclasses.dataclass(frozen=True)
class _Stripped:
    """A UNet's state dict without its class embedding, as `tiny.ldm_state_dict` reads a UNet."""

    state: dict
    config: object

    def state_dict(self) -> dict:
        return self.state


@pytest.fixture(scope="module")
def unclip_models(tmp_path_factory, tiny_models_dir) -> tuple[Path, TinyUnclip]:
    """A models folder with the tiny unCLIP checkpoint and a plain SD2 one."""
    models_dir = tmp_path_factory.mktemp("unclip-models")
    made = _write_unclip_checkpoint(models_dir / "checkpoints" / CHECKPOINT)
    shutil.copy(tiny_models_dir / "checkpoints" / PLAIN, models_dir / "checkpoints" / PLAIN)
    return models_dir, made


@pytest.fixture
def unclip_env(tmp_path, unclip_models, shared_model_manager):
    from nodes.environment import Folders, NodeEnvironment, use_environment

    folders = Folders(unclip_models[0], tmp_path / "input", tmp_path / "output", tmp_path / "temp",
                      tmp_path / "user")
    folders.create()
    environment = NodeEnvironment(folders, torch.device("cpu"), torch.float32, shared_model_manager)
    with use_environment(environment):
        yield environment


@pytest.fixture
def loaded(unclip_env):
    return unCLIPCheckpointLoader().load_checkpoint(CHECKPOINT)


def _image(seed: int = 0, size: int = 40) -> torch.Tensor:
    return torch.rand((1, size, size, 3), generator=torch.Generator().manual_seed(seed))


def _pipeline(made: TinyUnclip, unet):
    """diffusers' StableUnCLIPImg2ImgPipeline on the tiny parts (the reference for the class-embedding input)."""
    from diffusers import DDPMScheduler, StableUnCLIPImg2ImgPipeline
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPImageProcessor

    parts = made.components
    return StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(), image_encoder=made.vision,
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=EMBED),
        image_noising_scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
        tokenizer=parts.tokenizer, text_encoder=parts.text_encoder, unet=unet,
        scheduler=DDPMScheduler.from_config(parts.scheduler_config), vae=parts.vae)


def _comfy_noise(seed: int, draws: int = 1) -> list[torch.Tensor]:
    """ComfyUI's augmentation noise: torch.manual_seed(seed - 10), then randn of [1, width] (a second draw, from the
    same CPU generator, for the merge)."""
    generator = torch.Generator().manual_seed(seed - 10)
    return [torch.randn((1, EMBED), generator=generator) for _ in range(draws)]


def _captured_class_labels(model, positive, negative, seed: int, scheduler: str = "normal") -> torch.Tensor:
    """The UNet's class-embedding input of the first network call of a one-step KSampler run."""
    seen = []
    handle = model.network.class_embedding.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        ksample(model, seed, 1, 2.0, "euler", scheduler, positive, negative, EmptyLatentImage().generate(16, 16, 1)[0])
    finally:
        handle.remove()
    return seen[0].float()


# -- loading ------------------------------------------------------------------------------------------------------


def test_loader_reads_the_unet_class_embedding_and_the_image_encoder(unclip_models, loaded):
    made = unclip_models[1]
    model, clip, vae, clip_vision = loaded
    assert isinstance(model.sampling, sampling.UnclipSampling) and model.sampling.augmentor.width == EMBED
    assert model.prediction_type == "v_prediction"
    expected = made.components.unet.state_dict()
    for key, tensor in model.network.class_embedding.state_dict().items():
        assert torch.equal(tensor, expected[f"class_embedding.{key}"])
    image = _image()
    encoded = CLIPVisionEncode().encode(clip_vision, image, "center")[0]
    from diffusion.encoders.clip_vision import CLIP_MEAN, CLIP_STD, preprocess

    with torch.no_grad():
        reference = made.vision(pixel_values=preprocess(image, 32, CLIP_MEAN, CLIP_STD, True))
    torch.testing.assert_close(encoded.image_embeds, reference.image_embeds, rtol=1e-5, atol=1e-6)
    assert encoded.image_embeds.shape == (1, EMBED)


def test_checkpoint_loader_simple_runs_the_unclip_unet_too(unclip_env):
    model, _, _ = nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(CHECKPOINT)
    assert isinstance(model.sampling, sampling.UnclipSampling)


def test_a_plain_checkpoint_is_refused_naming_the_input(unclip_env):
    with pytest.raises(ValueError, match=r"^ckpt_name: tiny-sd2.safetensors: not an unCLIP checkpoint"):
        unCLIPCheckpointLoader().load_checkpoint(PLAIN)


# -- the conditioning node ----------------------------------------------------------------------------------------


def _output(seed: int = 0) -> ClipVisionOutput:
    embeds = torch.randn((1, EMBED), generator=torch.Generator().manual_seed(seed))
    return ClipVisionOutput(torch.zeros(1, 2, 4), embeds, torch.zeros(1, 2, 4))


def test_unclip_conditioning_appends_to_every_entry_and_copies():
    conditioning = [[torch.zeros(1, 2, 4), {"pooled_output": None}], [torch.ones(1, 2, 4), {}]]
    first, second = _output(1), _output(2)
    once = unCLIPConditioning().apply_adm(conditioning, first, 0.5, 0.25)[0]
    twice = unCLIPConditioning().apply_adm(once, second, -2.0, 0.0)[0]
    assert "unclip_conditioning" not in conditioning[0][1]
    assert [len(entry[1]["unclip_conditioning"]) for entry in once] == [1, 1]
    for entry in twice:
        assert entry[1]["unclip_conditioning"] == [
            {"clip_vision_output": first, "strength": 0.5, "noise_augmentation": 0.25},
            {"clip_vision_output": second, "strength": -2.0, "noise_augmentation": 0.0}]
    assert twice[0][1]["pooled_output"] is None and twice[1][0] is conditioning[1][0]


def test_strength_zero_leaves_the_conditioning_unchanged():
    conditioning = [[torch.zeros(1, 2, 4), {}]]
    assert unCLIPConditioning().apply_adm(conditioning, _output(), 0.0, 0.5)[0] is conditioning


def test_an_output_without_image_embeds_is_refused():
    siglip = ClipVisionOutput(torch.zeros(1, 2, 4), None, torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="^clip_vision_output: "):
        unCLIPConditioning().apply_adm([[torch.zeros(1, 2, 4), {}]], siglip, 1.0, 0.0)


# -- the UNet's image-embedding input against diffusers and ComfyUI ------------------------------------------------


@pytest.mark.parametrize("noise_augmentation, strength", [(0.0, 1.0), (0.3, 1.0), (0.75, 1.5)])
def test_class_labels_are_diffusers_noise_image_embeddings_with_comfyuis_noise(
        unclip_models, loaded, noise_augmentation, strength):
    model, clip, _, clip_vision = loaded
    encoded = CLIPVisionEncode().encode(clip_vision, _image(3), "center")[0]
    positive = unCLIPConditioning().apply_adm(clip.encode_prompt("a cat"), encoded, strength, noise_augmentation)[0]
    negative = clip.encode_prompt("")
    labels = _captured_class_labels(model, positive, negative, seed=123)

    pipeline = _pipeline(unclip_models[1], model.network)
    level = round(999 * noise_augmentation)
    expected = pipeline.noise_image_embeddings(encoded.image_embeds, level, noise=_comfy_noise(123)[0]) * strength
    assert labels.shape == (2, 2 * EMBED)  # negative row, positive row
    assert torch.equal(labels[0], torch.zeros(2 * EMBED))  # no image: ComfyUI's zeros
    torch.testing.assert_close(labels[1:], expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(model.network.class_embedding(labels[1:]),
                                   pipeline.unet.class_embedding(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("level", [0, 299, 599, 999])
def test_augmentation_is_comfyuis_formula(level):
    """ComfyUI's CLIPEmbeddingNoiseAugmentation by hand: its cosine schedule (s = 0.008, betas clipped at 0.999, in
    float64), q_sample at the level, data mean 0 and std 1, then the level's [cos, sin] embedding appended."""
    import math

    generator = torch.Generator().manual_seed(level)
    embeds, noise = torch.randn((1, EMBED), generator=generator), torch.randn((1, EMBED), generator=generator)
    steps = torch.arange(1001, dtype=torch.float64) / 1000 + 0.008
    alpha_bar = torch.cos(steps / 1.008 * math.pi / 2) ** 2
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(0, 0.999)
    kept = torch.cumprod(1 - betas, 0).float()[level]
    half = EMBED // 2
    angles = level * torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    expected = torch.cat([kept.sqrt() * embeds + (1 - kept).sqrt() * noise,
                          torch.cat([torch.cos(angles), torch.sin(angles)])[None]], dim=1)
    augmented = sampling.ImageEmbeddingAugmentor(EMBED).augment(embeds, level, noise)
    torch.testing.assert_close(augmented, expected, rtol=1e-5, atol=1e-5)


def test_the_noise_follows_the_sampling_seed_with_every_scheduler(loaded):
    model, clip, _, clip_vision = loaded
    encoded = CLIPVisionEncode().encode(clip_vision, _image(4), "center")[0]
    positive = unCLIPConditioning().apply_adm(clip.encode_prompt("a"), encoded, 1.0, 0.5)[0]
    negative = clip.encode_prompt("")
    first = _captured_class_labels(model, positive, negative, seed=5)
    assert torch.equal(first, _captured_class_labels(model, positive, negative, seed=5))
    assert torch.equal(first, _captured_class_labels(model, positive, negative, seed=5, scheduler=DIFFUSERS_SCHEDULER))
    assert not torch.allclose(first[1], _captured_class_labels(model, positive, negative, seed=6)[1])


def test_several_embeddings_are_summed_by_strength_and_augmented_again(unclip_models, loaded):
    model, clip, _, clip_vision = loaded
    images = torch.cat([_image(5), _image(6)])  # a batch of two images in one output, then one more item
    both = CLIPVisionEncode().encode(clip_vision, images, "center")[0]
    third = CLIPVisionEncode().encode(clip_vision, _image(7), "center")[0]
    positive = unCLIPConditioning().apply_adm(clip.encode_prompt("a"), both, 0.5, 0.1)[0]
    positive = unCLIPConditioning().apply_adm(positive, third, 2.0, 0.4)[0]
    labels = _captured_class_labels(model, positive, clip.encode_prompt(""), seed=77)[1:]

    pipeline = _pipeline(unclip_models[1], model.network)
    noise, merge_noise = _comfy_noise(77, draws=2)
    rows = [pipeline.noise_image_embeddings(both.image_embeds[:1], round(999 * 0.1), noise=noise) * 0.5,
            pipeline.noise_image_embeddings(both.image_embeds[1:], round(999 * 0.1), noise=noise) * 0.5,
            pipeline.noise_image_embeddings(third.image_embeds, round(999 * 0.4), noise=noise) * 2.0]
    merged = torch.stack(rows).sum(0)
    expected = pipeline.noise_image_embeddings(merged[:, :EMBED], round(999 * 0.05), noise=merge_noise)
    torch.testing.assert_close(labels, expected, rtol=1e-5, atol=1e-6)


def test_without_images_every_row_is_zeros(loaded):
    model, clip, _, clip_vision = loaded
    encoded = CLIPVisionEncode().encode(clip_vision, _image(8), "center")[0]
    positive = unCLIPConditioning().apply_adm(clip.encode_prompt("a"), encoded, 0.0, 0.5)[0]
    labels = _captured_class_labels(model, positive, clip.encode_prompt(""), seed=1)
    assert torch.equal(labels, torch.zeros(2, 2 * EMBED))


def test_unclip_conditioning_on_a_plain_model_names_the_input(unclip_env):
    model, clip, _ = nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(PLAIN)
    positive = unCLIPConditioning().apply_adm(clip.encode_prompt("a"), _output(), 1.0, 0.0)[0]
    with pytest.raises(ValueError, match="^positive: it carries unCLIP image embeddings"):
        ksample(model, 0, 1, 2.0, "euler", "normal", positive, clip.encode_prompt(""),
                EmptyLatentImage().generate(16, 16, 1)[0])


def test_an_embedding_of_another_width_names_the_input(loaded):
    model, clip, _, _ = loaded
    wide = ClipVisionOutput(torch.zeros(1, 2, 4), torch.ones(1, EMBED + 1), torch.zeros(1, 2, 4))
    negative = unCLIPConditioning().apply_adm(clip.encode_prompt(""), wide, 1.0, 0.0)[0]
    with pytest.raises(ValueError, match=f"^negative: this unCLIP model takes {EMBED}-wide"):
        ksample(model, 0, 1, 2.0, "euler", "normal", CLIPTextEncode().encode(clip, "a")[0], negative,
                EmptyLatentImage().generate(16, 16, 1)[0])


# -- an API workflow through the engine ---------------------------------------------------------------------------


def test_api_workflow_runs_through_the_engine(unclip_env):
    prompt = {
        "1": {"class_type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 40, "batch_size": 1, "color": 0x3366CC}},
        "3": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["1", 3], "image": ["2", 0],
                                                           "crop": "center"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a photo"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "6": {"class_type": "unCLIPConditioning", "inputs": {"conditioning": ["4", 0], "clip_vision_output": ["3", 0],
                                                             "strength": 1.0, "noise_augmentation": 0.1}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["6", 0], "negative": ["5", 0],
                                                   "latent_image": ["7", 0], "seed": 3, "steps": 2, "cfg": 3.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "unclip"}},
    }
    images = run_workflow(unclip_env, prompt, size=32)
    assert len(images) == 1 and images[0].size == (32, 32)
