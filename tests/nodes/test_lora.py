"""LoRA through diffusers/peft: parity with load_lora_weights + adapter weights, and the cached base untouched."""
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffusion.families.sd.demo import DEMO_LORA
from nodes.conditioning import CLIPTextEncode
from nodes.latent import EmptyLatentImage, VAEDecode
from nodes.loaders import LoraLoader, LoraLoaderModelOnly
from nodes.sampling import KSampler
from tests.nodes.test_parity import PROMPT, SEED, TOLERANCE, _reference_scheduler


def _image(model, clip, vae, steps=4):
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    negative = CLIPTextEncode().encode(clip, "")[0]
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    (samples,) = KSampler().sample(model, SEED, steps, 7.5, "euler", "diffusers", positive, negative, latent)
    return VAEDecode().decode(vae, samples)[0]


def _no_peft_layers(module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return not any(isinstance(layer, BaseTunerLayer) for layer in module.modules())


@pytest.mark.parametrize("strength_model, strength_clip", [(1.0, 1.0), (0.6, 0.25)])
def test_lora_matches_load_lora_weights(sd1, sd_pipeline, pipeline_scheduler_config, tiny_models_dir,
                                        strength_model, strength_clip):
    model, clip, vae = sd1
    lora_model, lora_clip = LoraLoader().load_lora(model, clip, DEMO_LORA, strength_model, strength_clip)
    image = _image(lora_model, lora_clip, vae)

    sd_pipeline.load_lora_weights(str(tiny_models_dir / "loras" / DEMO_LORA), adapter_name="tiny")
    try:
        sd_pipeline.set_adapters(["tiny"], adapter_weights=[{"unet": strength_model, "text_encoder": strength_clip}])
        sd_pipeline.scheduler = _reference_scheduler(pipeline_scheduler_config, "euler", "normal")
        expected = sd_pipeline(PROMPT, negative_prompt="", num_inference_steps=4, guidance_scale=7.5, height=64,
                               width=64, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    finally:
        sd_pipeline.unload_lora_weights()
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


def test_two_strengths_on_one_base_differ_and_the_base_is_untouched(sd1):
    model, clip, vae = sd1
    weights_before = {key: value.clone() for key, value in model.network.state_dict().items()}
    text_before = {key: value.clone() for key, value in clip.text_encoder.state_dict().items()}
    base = _image(model, clip, vae, steps=2)
    strong = _image(*LoraLoader().load_lora(model, clip, DEMO_LORA, 1.0, 1.0), vae, steps=2)
    weak = _image(*LoraLoader().load_lora(model, clip, DEMO_LORA, 0.3, 0.3), vae, steps=2)
    assert not torch.allclose(strong, weak) and not torch.allclose(base, weak)
    assert torch.equal(_image(model, clip, vae, steps=2), base)
    assert _no_peft_layers(model.network) and _no_peft_layers(clip.text_encoder)
    for module, before in ((model.network, weights_before), (clip.text_encoder, text_before)):
        after = module.state_dict()
        assert set(after) == set(before)
        assert all(torch.equal(after[key], before[key]) for key in after)


def test_base_text_encoder_weights_are_kept_while_a_lora_is_applied(sd1):
    from diffusion.lora import TEXT_ENCODER, lora_applied

    clip = LoraLoader().load_lora(sd1[0], sd1[1], DEMO_LORA, 1.0, 1.0)[1]
    before = {key: value.clone() for key, value in clip.text_encoder.state_dict().items()}
    with lora_applied(clip.text_encoder, TEXT_ENCODER, clip.loras):
        during = {key.replace("base_layer.", ""): value for key, value in clip.text_encoder.state_dict().items()
                  if "lora_" not in key}
    assert set(during) == set(before)
    assert all(torch.equal(during[key], before[key]) for key in before)


def test_model_only_lora_leaves_the_text_encoder(sd1):
    model, clip, vae = sd1
    (patched,) = LoraLoaderModelOnly().load_lora_model_only(model, DEMO_LORA, 0.8)
    assert len(patched.loras) == 1 and patched.network is model.network and not clip.loras
    lora_both = LoraLoader().load_lora(model, clip, DEMO_LORA, 0.8, 0.0)
    assert lora_both[1] is clip
    assert torch.equal(_image(patched, clip, vae, steps=2), _image(lora_both[0], clip, vae, steps=2))


def test_zero_strength_returns_the_inputs(sd1):
    model, clip, _ = sd1
    assert LoraLoader().load_lora(model, clip, DEMO_LORA, 0.0, 0.0) == (model, clip)


def test_lora_file_is_read_once(node_env, sd1):
    LoraLoader().load_lora(sd1[0], sd1[1], DEMO_LORA, 0.5, 0.5)
    LoraLoader().load_lora(sd1[0], sd1[1], DEMO_LORA, 0.7, 0.7)
    path = str((node_env.folders.model_dir("loras") / DEMO_LORA).resolve())
    assert node_env.models.loads[("lora-sd", path)] == 1


@pytest.fixture
def odd_loras(node_env):
    folder = node_env.folders.model_dir("loras") / "odd"
    folder.mkdir(exist_ok=True)
    save_file({"lora_unet_no_such_block_attn1_to_q.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_no_such_block_attn1_to_q.lora_up.weight": torch.zeros(32, 4)},
              str(folder / "unmatched.safetensors"))
    save_file({"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight":
               torch.zeros(4, 320),
               "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight":
               torch.zeros(320, 4)}, str(folder / "other_architecture.safetensors"))
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(4)}, str(folder / "not_a_lora.safetensors"))
    return folder


@pytest.mark.parametrize("name, message", [
    ("odd/unmatched.safetensors", "lora_name: .*matches no layers"),
    ("odd/other_architecture.safetensors", "lora_name: LoRA odd/other_architecture.safetensors does not fit"),
    ("odd/not_a_lora.safetensors", "lora_name: not_a_lora.safetensors is not a LoRA file"),
])
def test_unusable_loras_give_clear_errors(sd1, odd_loras, name, message):
    with pytest.raises(ValueError, match=message):
        LoraLoaderModelOnly().load_lora_model_only(sd1[0], name, 1.0)
    assert _no_peft_layers(sd1[0].network)
