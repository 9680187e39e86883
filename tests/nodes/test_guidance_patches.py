"""The guidance patch nodes CFGNorm, APG, PerturbedAttentionGuidance, SelfAttentionGuidance, SkipLayerGuidanceSD3
and SkipLayerGuidanceDiT:

- their contracts against ComfyUI's (`COMFYUI_CONTRACTS`, read off comfy_extras/nodes_cfg.py, nodes_apg.py,
  nodes_pag.py, nodes_sag.py, nodes_sd3.py and nodes_slg.py);
- the maths of CFGNorm and APG on small hand-computed tensors, and APG's hook before guidance on a stand-in model;
- PAG, SAG and SLG end to end, equal to diffusers' own implementations of the same guidance over the same sigmas
  (StableDiffusionPAGPipeline on the tiny SD1, StableDiffusionSAGPipeline over DDIM's sigmas, whose steps are
  Euler's, and StableDiffusion3Pipeline's skip_guidance_layers on the tiny SD3); equal to the unpatched model at
  scale 0; one more network call per guided step; the network's attention processors and blocks as they were
  after a run, also after one that failed; and refused, naming the input, where a family cannot take them.
"""
from __future__ import annotations

import contextlib
import dataclasses
from types import SimpleNamespace
from typing import Any, Mapping

import diffusers
import pytest
import torch

import nodes
from diffusion.components import DiffusionModel
from diffusion.contracts import FamilySampling
from diffusion.families.flux import demo as tiny_flux
from diffusion.families.sd.demo import DEMO_DIFFUSERS
from diffusion.families.sd3 import demo as sd3_tiny
from diffusion.sampling import guidance_patches as patches
from diffusion.sampling import guiders, network_changes
from diffusion.sampling import model_sampling as schedules
from diffusion.sampling.guidance import guidance_batch
from nodes import guidance_patches as gp
from nodes.conditioning import CLIPTextEncode
from nodes.custom_sampling import KSamplerSelect, RandomNoise, SamplerCustom, SamplerCustomAdvanced
from nodes.flux import EmptySD3LatentImage, FluxGuidance
from nodes.latent import EmptyLatentImage
from nodes.loaders import DiffusersLoader
from nodes.sampling import KSampler
from tests.nodes.conftest import own_storage

GUIDANCE = "advanced/guidance"
LAYERS = ("STRING", "7, 8, 9")
SLG_SPAN = [("scale", ("FLOAT", 3.0, 0.0, 10.0, 0.1)), ("start_percent", ("FLOAT", 0.01, 0.0, 1.0, 0.001)),
            ("end_percent", ("FLOAT", 0.15, 0.0, 1.0, 0.001))]

# node: (category, RETURN_TYPES, RETURN_NAMES or None, display name, experimental, the inputs in order: link type,
# (STRING, default) or (FLOAT, default, min, max, step))
COMFYUI_CONTRACTS: dict[str, tuple[str, tuple, tuple | None, str, bool, list]] = {
    "CFGNorm": (GUIDANCE, ("MODEL",), ("patched_model",), "CFGNorm", True, [
        ("model", "MODEL"), ("strength", ("FLOAT", 1.0, 0.0, 100.0, 0.01))]),
    "APG": ("sampling/custom_sampling", ("MODEL",), None, "Adaptive Projected Guidance", False, [
        ("model", "MODEL"), ("eta", ("FLOAT", 1.0, -10.0, 10.0, 0.01)),
        ("norm_threshold", ("FLOAT", 5.0, 0.0, 50.0, 0.1)), ("momentum", ("FLOAT", 0.0, -5.0, 1.0, 0.01))]),
    "PerturbedAttentionGuidance": ("model_patches/unet", ("MODEL",), None, "PerturbedAttentionGuidance", False, [
        ("model", "MODEL"), ("scale", ("FLOAT", 3.0, 0.0, 100.0, 0.01))]),
    "SelfAttentionGuidance": ("_for_testing", ("MODEL",), None, "Self-Attention Guidance", True, [
        ("model", "MODEL"), ("scale", ("FLOAT", 0.5, -2.0, 5.0, 0.01)),
        ("blur_sigma", ("FLOAT", 2.0, 0.0, 10.0, 0.1))]),
    "SkipLayerGuidanceSD3": (GUIDANCE, ("MODEL",), None, "SkipLayerGuidanceSD3", True, [
        ("model", "MODEL"), ("layers", LAYERS), *SLG_SPAN]),
    "SkipLayerGuidanceDiT": (GUIDANCE, ("MODEL",), None, "SkipLayerGuidanceDiT", True, [
        ("model", "MODEL"), ("double_layers", LAYERS), ("single_layers", LAYERS), *SLG_SPAN,
        ("rescaling_scale", ("FLOAT", 0.0, 0.0, 10.0, 0.01))]),
}


def _contract(node_class: type) -> tuple:
    inputs = []
    for name, (kind, options) in node_class.INPUT_TYPES()["required"].items():
        if kind == "FLOAT":
            inputs.append((name, (kind, options["default"], options["min"], options["max"], options["step"])))
        elif kind == "STRING":
            assert options["multiline"] is False
            inputs.append((name, (kind, options["default"])))
        else:
            inputs.append((name, kind))
    return (node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None),
            nodes.NODE_DISPLAY_NAME_MAPPINGS[node_class.__name__], getattr(node_class, "EXPERIMENTAL", False), inputs)


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    assert all(options.get("tooltip") for _, options in node_class.INPUT_TYPES()["required"].values())


def test_every_node_of_the_module_is_in_the_table():
    assert set(gp.NODE_CLASS_MAPPINGS) == set(COMFYUI_CONTRACTS)
    assert gp.PerturbedAttentionGuidance.INPUT_TYPES()["required"]["scale"][1]["round"] == 0.01


# -- CFGNorm and APG: the maths --------------------------------------------------------------------------------------


def test_cfg_norm_scales_each_pixel_down_to_the_positive_norm():
    # two pixels of two channels: the guided (6, 8) is twice as long as the positive (3, 4); (1, 0) is shorter
    positive = torch.tensor([[[[3.0, 1.0]], [[4.0, 0.0]]]])
    guided = torch.tensor([[[[6.0, 1.0]], [[8.0, 0.0]]]])
    out = patches.CfgNorm(2.0)({"cond_denoised": positive, "denoised": guided})
    assert torch.allclose(out, torch.tensor([[[[6.0, 2.0]], [[8.0, 0.0]]]]), atol=1e-6)
    (patched,) = gp.CFGNorm().patch(_stand_in(), 1.5)
    assert patched.post_cfg == (patches.CfgNorm(1.5),)


def _apg_args(positive, negative, sigma=2.0, cond_scale=4.0):
    return {"cond_denoised": positive, "uncond_denoised": negative, "sigma": torch.tensor([sigma]),
            "cond_scale": cond_scale, "input": torch.zeros_like(positive)}


def test_apg_caps_the_guidance_and_weights_its_part_along_the_positive():
    positive, negative = torch.tensor([3.0, 0.0]).view(1, 2, 1, 1), torch.tensor([0.0, 4.0]).view(1, 2, 1, 1)
    apg = patches.AdaptiveProjectedGuidance(eta=0.5, norm_threshold=2.5, momentum=0.0)
    new_positive, new_negative = apg(_apg_args(positive, negative))
    # guidance (3, -4) has norm 5, capped to 2.5: (1.5, -2); along the positive (1, 0): (1.5, 0), across: (0, -2);
    # moved = (0, -2) + 0.5 * (1.5, 0) = (0.75, -2); new positive = negative + moved + (positive - negative) / 4
    assert torch.equal(new_negative, negative)
    assert torch.allclose(new_positive.flatten(), torch.tensor([1.5, 1.0]))
    # guidance at scale 4 then gives positive + 4 * moved
    guided = new_negative + (new_positive - new_negative) * 4.0
    assert torch.allclose(guided.flatten(), torch.tensor([6.0, -8.0]))


def test_apg_momentum_keeps_a_running_sum_per_run_restarted_when_sigma_rises():
    positive, negative = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1), torch.zeros(1, 2, 1, 1)
    apg = patches.AdaptiveProjectedGuidance(eta=1.0, norm_threshold=0.0, momentum=0.5)  # moved = the running sum

    def moved(run, sigma, positive=positive):
        new_positive, _ = run(_apg_args(positive, negative, sigma, cond_scale=1.0))
        return (new_positive - positive).flatten()  # negative + moved + (positive - negative) / 1 - positive

    run = apg.for_run()
    assert torch.allclose(moved(run, 3.0), torch.tensor([2.0, 1.0]))
    assert torch.allclose(moved(run, 2.0), torch.tensor([3.0, 1.5]))  # 0.5 * (2, 1) + (2, 1)
    assert torch.allclose(moved(run, 1.0, positive * 2), torch.tensor([5.5, 2.75]))  # 0.5 * (3, 1.5) + (4, 2)
    assert torch.allclose(moved(run, 5.0), torch.tensor([2.0, 1.0]))  # sigma went up: a new sum
    assert torch.allclose(moved(apg.for_run(), 0.5), torch.tensor([2.0, 1.0]))  # a new run: a new sum
    assert apg.running is None  # the MODEL's patch itself is never run


# -- a stand-in model: eps = input * (1 + m) / 2 + m, m the mean of the row's text embedding ------------------------


class _Network:
    device, dtype = torch.device("cpu"), torch.float32


class _StandInSampling(FamilySampling):
    lora_component, family_title = "unet", "stand-in"

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        mean = embeddings.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return model_input * (1 + mean) / 2 + mean

    def make_scheduler(self, *args: Any) -> Any:
        raise NotImplementedError

    def noised(self, *args: Any) -> Any:
        raise NotImplementedError

    def predict(self, *args: Any) -> Any:
        raise NotImplementedError

    def denoised(self, *args: Any) -> Any:
        raise NotImplementedError


def _stand_in(**changes: Any) -> DiffusionModel:
    model = DiffusionModel(_Network(), {}, "stand-in", "sd1", _StandInSampling(),
                           schedule_override=schedules.DiscreteModelSampling())
    return dataclasses.replace(model, **changes)


def _text(value: float) -> list:
    return [[torch.full((1, 3, 4), value), {}]]


X = torch.linspace(-1.0, 1.0, 2 * 4 * 2 * 2).reshape(2, 4, 2, 2)
SIGMA = torch.tensor([2.0, 2.0])


def _denoise(guider: Any) -> torch.Tensor:
    return guider.denoiser(guider.model.network, X.shape[0], None, guider.model.model_sampling)(X, SIGMA)


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_apg_changes_the_positive_estimate_before_guidance(cfg):
    # eta 1, no cap, no momentum: the positive moves by (positive - negative), so guidance gives
    # positive + cfg * (positive - negative); at cfg 1 the skipped negative counts as zeros, as in ComfyUI
    plain = _stand_in()
    (model,) = gp.APG().patch(plain, 1.0, 0.0, 0.0)
    positive = _denoise(guiders.basic_guider(plain, _text(0.9)))
    negative = _denoise(guiders.basic_guider(plain, _text(-0.3))) if cfg != 1.0 else torch.zeros_like(positive)
    guided = _denoise(guiders.CFGGuider(model, _text(0.9), _text(-0.3), cfg))
    assert torch.allclose(guided, positive + cfg * (positive - negative), atol=1e-5)
    # Perp-Neg runs it too (on its positive and negative), DualCFG not (as ComfyUI's guiders)
    perp = [_text(0.9), _text(-0.3), _text(0.1), 4.0, 1.5]
    assert not torch.allclose(_denoise(guiders.PerpNegGuider(model, *perp)),
                              _denoise(guiders.PerpNegGuider(plain, *perp)))
    dual = [_text(0.9), _text(0.4), _text(-0.3), 3.0, 5.0]
    assert torch.equal(_denoise(guiders.DualCFGGuider(model, *dual)), _denoise(guiders.DualCFGGuider(plain, *dual)))


# -- PAG, SAG, SLG on the tiny models ---------------------------------------------------------------------------------

PROMPT, NEGATIVE, SEED = "a photo of an astronaut riding a horse", "blurry", 7
SD1_SIZE = 128  # 16x16 latents: the tiny UNet's middle block works on 2x2 tokens (at 64 pixels, on one)
STEPS, CFG = 4, 5.0


@contextlib.contextmanager
def _counted_calls(network: torch.nn.Module, fail_when: Any = None):
    """The rows of every network call while the block runs; `fail_when()` true makes a call raise."""
    rows: list[int] = []

    def count(module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        rows.append(sample.shape[0])
        if fail_when is not None and fail_when():
            raise RuntimeError("failing on purpose")

    handle = network.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield rows
    finally:
        handle.remove()


def _euler(model, positive, negative, sigmas, latent, cfg=CFG):
    (sampler,) = KSamplerSelect().get_sampler("euler")
    output, _ = SamplerCustom().sample(model, True, SEED, cfg, positive, negative, sampler, sigmas, latent)
    return model.latent_format.process_in(output["samples"])  # in model space, as the pipelines' latent output


def _processors(network) -> dict[str, Any]:
    return dict(network.attn_processors)


def _assert_same_processors(network, before: dict[str, Any]) -> None:
    after = _processors(network)
    assert after.keys() == before.keys() and all(after[name] is before[name] for name in before)


@pytest.fixture
def sd1_texts(sd1):
    model, clip, _ = sd1
    return model, CLIPTextEncode().encode(clip, PROMPT)[0], CLIPTextEncode().encode(clip, NEGATIVE)[0]


def _sd1_pipeline(tiny_models_dir, class_name, **options):
    pipeline = getattr(diffusers, class_name).from_pretrained(
        tiny_models_dir / "diffusers" / DEMO_DIFFUSERS, local_files_only=True, safety_checker=None, **options)
    own_storage(pipeline.unet, pipeline.vae, pipeline.text_encoder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _starting_latents(sigmas: torch.Tensor) -> torch.Tensor:
    """What a pipeline is handed to start where ComfyUI starts below the largest sigma (RandomNoise times the
    first sigma), in its variance-preserving scale."""
    noise = torch.randn(1, 4, SD1_SIZE // 8, SD1_SIZE // 8, generator=torch.Generator("cpu").manual_seed(SEED))
    first = sigmas[0]
    return noise * first / (first ** 2 + 1) ** 0.5


def test_pag_is_diffusers_pag_on_the_middle_block(sd1_texts, tiny_models_dir):
    model, positive, negative = sd1_texts
    pipeline = _sd1_pipeline(tiny_models_dir, "StableDiffusionPAGPipeline", pag_applied_layers=["mid"])
    pipeline.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    pipeline.scheduler.set_timesteps(STEPS)
    sigmas = pipeline.scheduler.sigmas.clone()
    (latent,) = EmptyLatentImage().generate(SD1_SIZE, SD1_SIZE, 1)
    before = _processors(model.network)
    plain = _euler(model, positive, negative, sigmas, latent)
    (pag,) = gp.PerturbedAttentionGuidance().patch(model, 3.0)
    assert model.post_cfg == () and pag.network is model.network
    with _counted_calls(model.network) as rows:
        guided = _euler(pag, positive, negative, sigmas, latent)
    assert rows == [2, 1] * STEPS  # negative and positive, then the positive with identity attention
    _assert_same_processors(model.network, before)
    expected = pipeline(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG,
                        pag_scale=3.0, height=SD1_SIZE, width=SD1_SIZE, latents=_starting_latents(sigmas),
                        output_type="latent").images
    assert torch.isfinite(guided).all() and (guided - expected).abs().max() <= 1e-4
    assert (guided - plain).abs().max() > 0.01
    assert torch.equal(_euler(pag, positive, negative, sigmas, latent), guided)
    with _counted_calls(model.network) as rows:
        assert torch.equal(_euler(gp.PerturbedAttentionGuidance().patch(model, 0.0)[0], positive, negative,
                                  sigmas, latent), plain)
    assert rows == [2] * STEPS


def _sigmas_of_ddim(scheduler) -> torch.Tensor:
    """The noise levels of DDIM's timesteps and of its final step (alphas_cumprod[0]: SD's set_alpha_to_one is
    off); Euler over them is deterministic DDIM."""
    alphas = [scheduler.alphas_cumprod[int(t)] for t in scheduler.timesteps] + [scheduler.final_alpha_cumprod]
    return torch.tensor([float(((1 - alpha) / alpha) ** 0.5) for alpha in alphas])


def test_sag_is_diffusers_sag(sd1_texts, tiny_models_dir):
    model, positive, negative = sd1_texts
    pipeline = _sd1_pipeline(tiny_models_dir, "StableDiffusionSAGPipeline")
    pipeline.scheduler = diffusers.DDIMScheduler.from_config(pipeline.scheduler.config)
    pipeline.scheduler.set_timesteps(STEPS)
    sigmas = _sigmas_of_ddim(pipeline.scheduler)
    (latent,) = EmptyLatentImage().generate(SD1_SIZE, SD1_SIZE, 1)
    before = _processors(model.network)
    plain = _euler(model, positive, negative, sigmas, latent)
    (sag,) = gp.SelfAttentionGuidance().patch(model, 0.75, 1.0)  # diffusers' SAG blurs with sigma 1
    with _counted_calls(model.network) as rows:
        guided = _euler(sag, positive, negative, sigmas, latent)
    assert rows == [2, 1] * STEPS  # negative and positive, then the degraded negative
    _assert_same_processors(model.network, before)
    expected = pipeline(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG,
                        sag_scale=0.75, height=SD1_SIZE, width=SD1_SIZE, latents=_starting_latents(sigmas),
                        output_type="latent").images
    in_pipeline_scale = guided / (1 + sigmas[-1] ** 2) ** 0.5  # DDIM ends at alphas_cumprod[0], not at sigma 0
    assert torch.isfinite(guided).all() and (in_pipeline_scale - expected).abs().max() <= 1e-4
    assert (guided - plain).abs().max() > 0.01
    assert torch.equal(_euler(sag, positive, negative, sigmas, latent), guided)
    assert torch.equal(_euler(gp.SelfAttentionGuidance().patch(model, 0.0, 1.0)[0], positive, negative, sigmas,
                              latent), plain)


def test_sag_records_the_attention_of_the_negative_rows_and_keeps_them_at_cfg_1(sd1_texts):
    model, positive, negative = sd1_texts
    (sag_model,) = gp.SelfAttentionGuidance().patch(model, 0.5, 2.0)
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3)) * 8.0
    sigma = torch.tensor([8.0, 8.0])
    denoiser = guiders.CFGGuider(sag_model, positive, negative, 1.0).denoiser(
        model.network, 2, None, model.model_sampling)
    with _counted_calls(model.network) as rows:
        denoiser(x, sigma)
    assert rows == [4, 2]  # at cfg 1 the negative is still estimated (ComfyUI's disable_cfg1_optimization)
    (sag,) = denoiser.post_cfg
    assert sag is not sag_model.post_cfg[0]  # the run's own copy
    (received,) = sag.attention_received
    assert received.shape == (2, 4)  # the attention each of the 2x2 middle tokens received, per latent row
    assert torch.allclose(received.sum(-1), torch.tensor([4.0, 4.0]))  # each query's attention sums to 1
    assert (received > patches.SAG_THRESHOLD).any() and (received <= patches.SAG_THRESHOLD).any()
    alone = patches.SelfAttentionGuidance(0.5, 2.0)
    with alone.observing(model.network, slice(0, 2)):
        denoiser.estimate(negative, x, sigma)
    assert torch.allclose(torch.cat(alone.attention_received), received, atol=1e-5)


def test_sag_maps_blur_and_grids():
    image = torch.arange(2 * 10 * 12, dtype=torch.float32).reshape(1, 2, 10, 12)
    flat = torch.full((1, 3, 10, 10), 2.5)
    assert torch.allclose(patches.gaussian_blurred(flat, 9, 2.0), flat)
    assert torch.equal(patches.gaussian_blurred(image, 9, 0.0), image)  # the no-blur limit (ComfyUI: NaN)
    blurred = patches.gaussian_blurred(image, 9, 2.0)
    assert blurred.shape == image.shape and torch.allclose(blurred.mean(), image.mean(), rtol=0.05)
    assert patches.token_grid(16, 8, 8) == (4, 4) and patches.token_grid(12, 6, 8) == (3, 4)
    assert patches.token_grid(2, 8, 12) == (1, 2)  # where ComfyUI's search stops too early
    assert patches.token_grid(1, 8, 8) == (1, 1)
    # the top half of a 2x2 map looked at: the top half of the latents blurred, the bottom kept
    received = torch.tensor([[1.5, 1.5, 0.5, 0.5]])
    degraded = patches.attention_blurred(image, received, 2.0)
    assert torch.equal(degraded[..., 5:, :], image[..., 5:, :])
    assert torch.equal(degraded[..., :5, :], blurred[..., :5, :])


def test_attention_processors_are_restored_after_a_failed_run(sd1_texts):
    model, positive, negative = sd1_texts
    (latent,) = EmptyLatentImage().generate(SD1_SIZE, SD1_SIZE, 1)
    sigmas = torch.tensor([8.0, 2.0, 0.0])
    before = _processors(model.network)
    first_middle = network_changes.middle_self_attentions(model.network)[0]
    cases = [(gp.PerturbedAttentionGuidance().patch(model, 3.0)[0], network_changes.IdentitySelfAttention),
             (gp.SelfAttentionGuidance().patch(model, 0.5, 2.0)[0], network_changes.RecordingSelfAttention)]
    for patched, changed in cases:
        with _counted_calls(model.network, lambda: isinstance(first_middle.processor, changed)), \
                pytest.raises(RuntimeError, match="on purpose"):
            _euler(patched, positive, negative, sigmas, latent)
        _assert_same_processors(model.network, before)


def test_unet_patches_are_refused_for_transformer_models_and_sag_twice(sd3, sd1):
    with pytest.raises(ValueError, match="^model: PerturbedAttentionGuidance .* this SD3 model"):
        gp.PerturbedAttentionGuidance().patch(sd3[0], 3.0)
    with pytest.raises(ValueError, match="^model: SelfAttentionGuidance .* this SD3 model"):
        gp.SelfAttentionGuidance().patch(sd3[0], 0.5, 2.0)
    (once,) = gp.SelfAttentionGuidance().patch(sd1[0], 0.5, 2.0)
    with pytest.raises(ValueError, match="^model: already has SelfAttentionGuidance"):
        gp.SelfAttentionGuidance().patch(once, 0.5, 2.0)
    # a middle block whose attention has no transformer blocks (the unCLIP decoder's) has no self-attention to use
    simple_middle = SimpleNamespace(mid_block=SimpleNamespace(attentions=torch.nn.ModuleList([torch.nn.Identity()])))
    assert network_changes.middle_self_attentions(simple_middle) is None


# -- SLG: the tiny SD3 (two joint blocks) and the tiny FLUX (one double, one single block) ------------------------

SD3_SIZE = 32


@pytest.fixture(scope="session")
def sd3_pipeline(tiny_models_dir):
    sd3_tiny.make_sd3_demo_models(tiny_models_dir)
    pipeline = diffusers.StableDiffusion3Pipeline.from_pretrained(
        tiny_models_dir / "diffusers" / sd3_tiny.DEMO_DIFFUSERS, local_files_only=True)
    own_storage(pipeline.transformer, pipeline.vae, pipeline.text_encoder, pipeline.text_encoder_2,
                pipeline.text_encoder_3)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture
def sd3(node_env, sd3_pipeline):
    return DiffusersLoader().load_checkpoint(sd3_tiny.DEMO_DIFFUSERS)


def _sd3_run(sd3, sd3_pipeline):
    model, clip, _ = sd3
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(sd3_pipeline.scheduler.config)
    scheduler.set_timesteps(STEPS)  # what StableDiffusion3Pipeline samples over
    (latent,) = EmptySD3LatentImage().generate(SD3_SIZE, SD3_SIZE, 1)
    texts = CLIPTextEncode().encode(clip, PROMPT)[0], CLIPTextEncode().encode(clip, NEGATIVE)[0]
    return model, texts, scheduler.sigmas.clone(), latent


def _sd3_pipeline_latents(pipeline, **skip_layer_guidance):
    pipeline.scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    return pipeline(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG,
                    height=SD3_SIZE, width=SD3_SIZE, generator=torch.Generator("cpu").manual_seed(SEED),
                    output_type="latent", **skip_layer_guidance).images


def test_skip_layer_guidance_sd3_is_the_sd3_pipelines(sd3, sd3_pipeline):
    model, (positive, negative), sigmas, latent = _sd3_run(sd3, sd3_pipeline)
    plain = _euler(model, positive, negative, sigmas, latent)
    # ComfyUI's span (sigma between the percents' sigmas) against the pipeline's (step index between fractions of
    # the steps): both guide every step but the first, which starts at sigma 1
    (slg,) = gp.SkipLayerGuidanceSD3().patch(model, "0", 2.0, 0.01, 1.0)
    with _counted_calls(model.network) as rows:
        guided = _euler(slg, positive, negative, sigmas, latent)
    assert rows == [2] + [2, 1] * (STEPS - 1)
    assert not any("forward" in vars(block) for block in model.network.transformer_blocks)
    expected = _sd3_pipeline_latents(sd3_pipeline, skip_guidance_layers=[0], skip_layer_guidance_scale=2.0,
                                     skip_layer_guidance_start=0.01, skip_layer_guidance_stop=1.0)
    assert torch.isfinite(guided).all() and (guided - expected).abs().max() <= 1e-4
    assert (guided - plain).abs().max() > 0.01
    assert torch.equal(_euler(slg, positive, negative, sigmas, latent), guided)
    with _counted_calls(model.network) as rows:
        zero = _euler(gp.SkipLayerGuidanceSD3().patch(model, "0", 0.0, 0.01, 1.0)[0], positive, negative, sigmas,
                      latent)
    assert torch.equal(zero, plain) and rows == [2] * STEPS
    # 0.01 to 0.5 of the schedule is sigma 0.9967 down to 0.75 (shift 3): only the second step's sigma, 0.8577
    with _counted_calls(model.network) as rows:
        _euler(gp.SkipLayerGuidanceSD3().patch(model, "0", 2.0, 0.01, 0.5)[0], positive, negative, sigmas, latent)
    assert rows == [2, 2, 1, 2, 2]


def test_skipped_blocks_are_diffusers_skip_layers_and_restored_after_a_failure(sd3, sd3_pipeline):
    model, (positive, negative), sigmas, latent = _sd3_run(sd3, sd3_pipeline)
    network = model.network
    generator = torch.Generator().manual_seed(1)
    inputs = {"hidden_states": torch.randn(1, 16, 4, 4, generator=generator), "timestep": torch.tensor([500.0]),
              "encoder_hidden_states": torch.randn(1, 5, network.config.joint_attention_dim, generator=generator),
              "pooled_projections": torch.randn(1, network.config.pooled_projection_dim, generator=generator)}
    with torch.no_grad():
        native = network(**inputs, skip_layers=[0], return_dict=False)[0]
        with network_changes.blocks_skipped(network, {"double": [0]}):
            ours = network(**inputs, return_dict=False)[0]
        assert torch.equal(ours, native) and not torch.equal(network(**inputs, return_dict=False)[0], native)
    (slg,) = gp.SkipLayerGuidanceSD3().patch(model, "1", 2.0, 0.0, 1.0)
    first_block = network.transformer_blocks[1]
    with _counted_calls(network, lambda: "forward" in vars(first_block)), pytest.raises(RuntimeError):
        _euler(slg, positive, negative, sigmas, latent)
    assert not any("forward" in vars(block) for block in network.transformer_blocks)


def test_skip_layer_guidance_refuses_what_the_model_cannot_skip(sd3, sd1):
    model = sd3[0]
    with pytest.raises(ValueError, match="^model: SkipLayerGuidanceSD3 .* this SD1.x/SD2.x model"):
        gp.SkipLayerGuidanceSD3().patch(sd1[0], "7, 8, 9", 3.0, 0.01, 0.15)
    with pytest.raises(ValueError, match=r"^layers: layer 7 is past the last of this model's 2 double blocks \(0-1\)"):
        gp.SkipLayerGuidanceSD3().patch(model, "7, 8, 9", 3.0, 0.01, 0.15)
    with pytest.raises(ValueError, match="^single_layers: this SD3 model has no single blocks"):
        gp.SkipLayerGuidanceDiT().patch(model, "", "0", 3.0, 0.01, 0.15, 0.0)
    assert gp.SkipLayerGuidanceDiT().patch(model, "", "", 3.0, 0.01, 0.15, 0.0)[0] is model  # nothing to skip
    (patched,) = gp.SkipLayerGuidanceDiT().patch(model, "[1]", "0, 1", 3.0, 0.0, 1.0, 0.5)  # single ignored
    (patch,) = patched.post_cfg
    assert dict(patch.layers) == {"double": (1,)} and (patch.sigma_start, patch.sigma_end) == (1.0, 0.0)


def test_skip_layer_guidance_rescales_towards_the_positive_spread():
    positive, guided, skipped = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 4.0]), torch.tensor([1.0, 2.0])
    args = {"denoised": guided.view(1, 2, 1, 1), "cond_denoised": positive.view(1, 2, 1, 1), "cond": "c",
            "sigma": torch.tensor([0.5]), "input": torch.zeros(1, 2, 1, 1),
            "estimate": lambda conditioning, x, sigma, change: skipped.view(1, 2, 1, 1)}
    slg = patches.SkipLayerGuidance({"double": (0,)}, 2.0, 1.0, 0.0, rescaling_scale=0.5)
    unscaled = guided + (positive - skipped) * 2.0  # (0, 6)
    factor = 0.5 * positive.std() / unscaled.std() + 0.5
    assert torch.allclose(slg(args).flatten(), unscaled * factor)
    assert torch.equal(patches.SkipLayerGuidance({}, 2.0, 0.4, 0.0)(args), args["denoised"])  # outside the span


@pytest.fixture
def flux(node_env, tiny_models_dir):
    tiny_flux.make_flux_demo_models(tiny_models_dir)
    return DiffusersLoader().load_checkpoint(tiny_flux.DEMO_FLUX_DIFFUSERS)


def test_skip_layer_guidance_dit_skips_flux_double_and_single_blocks(flux):
    model, clip, _ = flux
    network = model.network
    positive = FluxGuidance().append(CLIPTextEncode().encode(clip, PROMPT)[0], 3.5)[0]
    negative = CLIPTextEncode().encode(clip, "")[0]
    (latent,) = EmptySD3LatentImage().generate(SD3_SIZE, SD3_SIZE, 1)
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.0])
    (slg,) = gp.SkipLayerGuidanceDiT().patch(model, "0", "0", 3.0, 0.0, 1.0, 0.0)
    assert dict(slg.post_cfg[0].layers) == {"double": (0,), "single": (0,)}
    # skipping every block is the network without blocks
    skip = {"double": range(len(network.transformer_blocks)), "single": range(len(network.single_transformer_blocks))}
    model_input = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(2))
    timestep, embeddings = torch.tensor([0.5]), positive[0][0]
    inputs = model.sampling.network_inputs(
        guidance_batch(positive, positive, 1, 1.0, model.device, model.dtype), 1, model.device, model.dtype)

    def output():
        return model.sampling.network_output(network, model_input, timestep, embeddings, inputs)

    with torch.no_grad():
        with network_changes.blocks_skipped(network, skip):
            skipped = output()
        blocks = network.transformer_blocks, network.single_transformer_blocks
        network.transformer_blocks, network.single_transformer_blocks = torch.nn.ModuleList(), torch.nn.ModuleList()
        try:
            without_blocks = output()
        finally:
            network.transformer_blocks, network.single_transformer_blocks = blocks
        assert torch.equal(skipped, without_blocks) and not torch.equal(output(), skipped)
    plain = _euler(model, positive, negative, sigmas, latent, cfg=1.0)
    with _counted_calls(network) as rows:
        guided = _euler(slg, positive, negative, sigmas, latent, cfg=1.0)
    assert rows == [1, 1] * 3  # FLUX.1-dev at cfg 1: the positive, then the positive with blocks skipped
    assert torch.isfinite(guided).all() and (guided - plain).abs().max() > 0.01
    assert torch.equal(_euler(slg, positive, negative, sigmas, latent, cfg=1.0), guided)
    assert not any("forward" in vars(block) for block in [*network.transformer_blocks,
                                                          *network.single_transformer_blocks])


def test_patches_run_through_ksampler(sd1_texts):
    """KSampler (the sigma core) with every UNet patch at once, in ComfyUI's order of application."""
    model, positive, negative = sd1_texts
    (latent,) = EmptyLatentImage().generate(SD1_SIZE, SD1_SIZE, 1)
    (patched,) = gp.APG().patch(model, 0.5, 5.0, 0.3)
    (patched,) = gp.PerturbedAttentionGuidance().patch(patched, 2.0)
    (patched,) = gp.SelfAttentionGuidance().patch(patched, 0.5, 2.0)
    (patched,) = gp.CFGNorm().patch(patched, 1.0)
    with _counted_calls(model.network) as rows:
        (samples,) = KSampler().sample(patched, SEED, 3, CFG, "euler", "normal", positive, negative, latent)
    assert rows == [2, 1, 1] * 3 and torch.isfinite(samples["samples"]).all()
    (again,) = KSampler().sample(patched, SEED, 3, CFG, "euler", "normal", positive, negative, latent)
    assert torch.equal(again["samples"], samples["samples"])


@pytest.mark.parametrize("guider", ["DualCFGGuider", "PerpNegGuider"])
def test_pag_and_sag_run_in_the_joint_guiders(sd1, guider):
    """ComfyUI's DualCFG and Perp-Neg guiders call the post-CFG patches with their own cond and uncond (DualCFG:
    cond2 and the negative; Perp-Neg: the positive and the negative); the negative is kept at scale 1 for SAG."""
    model, clip, _ = sd1
    texts = [CLIPTextEncode().encode(clip, text)[0] for text in ("a red cube", "a cube", "blurry")]
    (patched,) = gp.PerturbedAttentionGuidance().patch(model, 2.0)
    (patched,) = gp.SelfAttentionGuidance().patch(patched, 0.5, 2.0)
    if guider == "DualCFGGuider":
        built = guiders.DualCFGGuider(patched, *texts, 1.0, 1.0)  # without SAG both cond2 and the negative go
    else:
        built = guiders.PerpNegGuider(patched, texts[0], texts[2], CLIPTextEncode().encode(clip, "")[0], 4.0, 0.0)
    (latent,) = EmptyLatentImage().generate(SD1_SIZE, SD1_SIZE, 1)
    (noise,) = RandomNoise().get_noise(SEED)
    with _counted_calls(model.network) as rows:
        output, _ = SamplerCustomAdvanced().sample(noise, built, KSamplerSelect().get_sampler("euler")[0],
                                                   torch.tensor([8.0, 2.0, 0.0]), latent)
    assert rows == [3, 1, 1] * 2 and torch.isfinite(output["samples"]).all()


def test_the_diffusers_scheduler_refuses_a_patched_model(sd1_texts):
    """The diffusers loop takes no guidance patches: a patched model there is a clear error, not ignored."""
    model, positive, negative = sd1_texts
    (patched,) = gp.CFGNorm().patch(model, 1.0)
    (latent,) = EmptyLatentImage().generate(SD1_SIZE, SD1_SIZE, 1)
    with pytest.raises(ValueError, match="scheduler: 'diffusers' runs the model's diffusers scheduler, which takes no "
                                         "guidance patches"):
        KSampler().sample(patched, SEED, 1, 5.0, "euler", "diffusers", positive, negative, latent)
