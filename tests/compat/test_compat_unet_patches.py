"""ComfyUI's UNet patches that packs set on a MODEL (IPAdapter's attn2_replace, attention input/output patches,
block patches) run in our UNet at ComfyUI's places, with ComfyUI's extra_options."""
from __future__ import annotations

import pytest
import torch
from comfy.ldm.modules.attention import optimized_attention

# the demo SD1 UNet has attention at its two middle levels: ComfyUI's input blocks 4, 5, 7, 8, the middle block
# and output blocks 3 to 8, eleven spatial transformers in the order the network runs them
DEMO_BLOCKS = [("input", 4), ("input", 5), ("input", 7), ("input", 8), ("middle", 0), ("output", 3), ("output", 4),
               ("output", 5), ("output", 6), ("output", 7), ("output", 8)]


def test_attention_replacements_run_at_comfyuis_places_with_its_extra_options(sd1, euler_sampled):
    model, positive, negative = sd1
    expected = euler_sampled(model, positive, negative)
    seen = []

    def attend(q, k, v, extra_options):
        seen.append({key: extra_options[key] for key in ("block", "block_index", "transformer_index", "n_heads",
                                                         "dim_head", "cond_or_uncond", "original_shape")}
                    | {"rows": q.shape[0], "sigma": float(extra_options["sigmas"][0]),
                       "tokens": k.shape[1]})
        return optimized_attention(q, k, v, extra_options["n_heads"])

    patched = model.clone()
    for block in DEMO_BLOCKS:
        patched.set_model_attn2_replace(attend, *block)
    # the same attention, computed again
    torch.testing.assert_close(euler_sampled(patched, positive, negative), expected)
    assert euler_sampled(model, positive, negative).equal(expected)  # the original MODEL is unpatched
    first_call = seen[:len(DEMO_BLOCKS)]
    assert [entry["block"] for entry in first_call] == DEMO_BLOCKS
    assert [entry["transformer_index"] for entry in first_call] == list(range(len(DEMO_BLOCKS)))
    assert all(entry["block_index"] == 0 and entry["cond_or_uncond"] == [1, 0] and entry["rows"] == 2
               and entry["original_shape"] == [2, 4, 8, 8] and entry["tokens"] == 77 for entry in seen)
    heads = {entry["n_heads"] * entry["dim_head"] for entry in first_call}
    assert heads == {32, 64} and {entry["n_heads"] for entry in first_call} == {8}
    sigmas = sorted({entry["sigma"] for entry in seen}, reverse=True)
    assert len(sigmas) == 2 and len(seen) == 2 * len(DEMO_BLOCKS)  # one network call per step at cfg 5

    # at cfg 1 only the positive rows run
    seen.clear()
    euler_sampled(patched, positive, negative, cfg=1.0)
    assert {tuple(entry["cond_or_uncond"]) for entry in seen} == {(0,)} and {e["rows"] for e in seen} == {1}


def test_a_replacement_with_a_transformer_index_and_one_that_changes_the_result(sd1, euler_sampled):
    model, positive, negative = sd1
    expected = euler_sampled(model, positive, negative)
    calls = []

    def ignore_the_text(q, k, v, extra_options):
        calls.append(extra_options["block"])
        return optimized_attention(q, torch.zeros_like(k), torch.zeros_like(v), extra_options["n_heads"])

    patched = model.clone()
    patched.set_model_attn2_replace(ignore_the_text, "output", 3, 0)
    assert not torch.allclose(euler_sampled(patched, positive, negative), expected)
    assert set(calls) == {("output", 3)}
    calls.clear()
    elsewhere = model.clone()
    elsewhere.set_model_attn2_replace(ignore_the_text, "output", 3, 1)  # that block has one transformer block
    assert euler_sampled(elsewhere, positive, negative).equal(expected) and not calls


def test_attention_input_and_output_patches(sd1, euler_sampled):
    model, positive, negative = sd1
    expected = euler_sampled(model, positive, negative)
    kinds = []

    def inputs(n, context, value, extra_options):
        kinds.append((extra_options["block"], n.shape[1] == context.shape[1]))
        return n, context, value

    def output(out, extra_options):
        return out * 1.0

    unchanged = model.clone()
    unchanged.set_model_attn1_patch(inputs)
    unchanged.set_model_attn2_patch(inputs)
    unchanged.set_model_patch(output, "attn1_output_patch")
    unchanged.set_model_attn2_output_patch(output)
    torch.testing.assert_close(euler_sampled(unchanged, positive, negative), expected)
    # self-attention's context is its own tokens, cross-attention's the text
    assert {same for block, same in kinds[0::2]} == {True} and {same for block, same in kinds[1::2]} == {False}

    scaled = model.clone()
    scaled.set_model_attn1_output_patch(lambda out, extra_options: out * 0.5)
    assert not torch.allclose(euler_sampled(scaled, positive, negative), expected)
    with pytest.raises(AttributeError, match="patch kind 'middle_block_patch' is not supported"):
        model.clone().set_model_patch(output, "middle_block_patch")


def test_block_patches_see_comfyuis_block_numbers(sd1, euler_sampled):
    model, positive, negative = sd1
    expected = euler_sampled(model, positive, negative)
    seen = []

    def input_patch(h, transformer_options):
        seen.append(transformer_options["block"])
        return h

    def output_patch(h, hsp, transformer_options):
        seen.append(transformer_options["block"])
        return h, hsp

    patched = model.clone()
    patched.set_model_input_block_patch(input_patch)
    patched.set_model_output_block_patch(output_patch)
    torch.testing.assert_close(euler_sampled(patched, positive, negative), expected)
    first_call = seen[:len(seen) // 2]
    assert first_call == [("input", index) for index in range(12)] + [("output", index) for index in range(12)]

    halved = model.clone()
    halved.set_model_output_block_patch(lambda h, hsp, options: (h, hsp * 0.5))
    assert not torch.allclose(euler_sampled(halved, positive, negative), expected)
