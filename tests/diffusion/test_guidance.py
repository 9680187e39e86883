"""Classifier-free guidance rows: entries of different token lengths share a network call only while repeating
them to a common length stays within `MAX_REPEAT`; otherwise each group goes through the network on its own."""
import torch

from diffusion.sampling.guidance import MAX_REPEAT, guidance_batch
from nodes.conditioning import CLIPTextEncode
from nodes.latent import EmptyLatentImage
from nodes.sampling import KSampler


def _conditioning(tokens: int, width: int = 8) -> list:
    return [[torch.randn(1, tokens, width), {}]]


def test_lengths_within_the_repeat_limit_share_one_call():
    batch = guidance_batch(_conditioning(154), _conditioning(77), 2, 7.0, torch.device("cpu"), torch.float32)
    (group,) = batch.groups
    assert (group.start, group.stop) == (0, 4) and group.embeddings.shape == (4, 154, 8)


def test_lengths_beyond_the_repeat_limit_go_through_separate_calls():
    # an SD3 prompt of 410 tokens against a 333-token negative once became 136,530 tokens
    batch = guidance_batch(_conditioning(410), _conditioning(333), 1, 7.0, torch.device("cpu"), torch.float32)
    assert [(group.start, group.stop, tuple(group.embeddings.shape)) for group in batch.groups] == [
        (0, 1, (1, 333, 8)), (1, 2, (1, 410, 8))]
    assert batch.rows == 2 and max(len(g.embeddings[0]) for g in batch.groups) <= MAX_REPEAT * 410


def test_separate_calls_give_the_result_of_one_call_with_repeated_tokens(sd1):
    model, clip, _ = sd1
    long_prompt = CLIPTextEncode().encode(clip, " ".join(["a"] * 375))[0]  # 5 chunks: 385 tokens
    negative = CLIPTextEncode().encode(clip, "blurry")[0]
    assert long_prompt[0][0].shape[1] == 5 * 77 and 5 > MAX_REPEAT
    repeated = [[negative[0][0].repeat(1, 5, 1), negative[0][1]]]  # what one shared call would see
    (latent,) = EmptyLatentImage().generate(64, 64, 1)  # each call has one row: the tiny UNet's 1x1 level needs 64
    split = KSampler().sample(model, 3, 3, 6.0, "euler", "normal", long_prompt, negative, latent)[0]["samples"]
    shared = KSampler().sample(model, 3, 3, 6.0, "euler", "normal", long_prompt, repeated, latent)[0]["samples"]
    # equal up to float32 rounding at the latents' scale (this tiny UNet's reach a few hundred at cfg 6; how the
    # rounding falls depends on the CPU's kernels)
    assert (split - shared).abs().max() <= 1e-5 * shared.abs().max()
