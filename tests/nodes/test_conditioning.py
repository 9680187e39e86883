"""Prompt encoding: emphasis parsing, 77-token chunks, CLIP layer choice, and equality with diffusers' encoding."""
import pytest
import torch

from diffusion.encoders.prompt import parse_prompt_weights, tokenize_weighted
from nodes.conditioning import CLIPSetLastLayer, CLIPTextEncode


@pytest.mark.parametrize("text, expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a (b:1.5) c", [("a ", 1.0), ("b", 1.5), (" c", 1.0)]),
    ("(b)", [("b", pytest.approx(1.1))]),
    ("((b))", [("b", pytest.approx(1.21))]),
    ("(a (b:2) c:0.5)", [("a ", 0.5), ("b", 2.0), (" c", 0.5)]),
    ("\\(literal\\) (x:1.2)", [("(literal) ", 1.0), ("x", 1.2)]),
    ("(time: noon)", [("time: noon", pytest.approx(1.1))]),
    ("unbalanced ) here", [("unbalanced ) here", 1.0)]),
])
def test_emphasis_syntax(text, expected):
    assert parse_prompt_weights(text) == expected


def test_long_prompts_are_chunked_not_cut(sd1):
    tokenizer = sd1[1].tokenizer
    words = " ".join(f"word{i}" for i in range(60))
    chunks = tokenize_weighted(tokenizer, words)
    assert len(chunks) > 1 and all(len(chunk) == 77 for chunk in chunks)
    assert all(chunk[0][0] == tokenizer.bos_token_id for chunk in chunks)
    content = [token for chunk in chunks for token, _ in chunk[1:] if token not in (
        tokenizer.eos_token_id, tokenizer.pad_token_id)]
    assert content == tokenizer(words, add_special_tokens=False)["input_ids"]
    (conditioning,) = CLIPTextEncode().encode(sd1[1], words)
    assert conditioning[0][0].shape == (1, 77 * len(chunks), 64)
    assert conditioning[0][1]["pooled_output"].shape == (1, 64)


def test_short_words_do_not_straddle_chunks(sd1):
    tokenizer = sd1[1].tokenizer
    word_tokens = len(tokenizer("astronaut", add_special_tokens=False)["input_ids"])
    assert 1 < word_tokens < 8
    chunks = tokenize_weighted(tokenizer, "a " * 74 + "astronaut")
    assert [token for token, _ in chunks[1][1:1 + word_tokens]] == tokenizer(
        "astronaut", add_special_tokens=False)["input_ids"]


def test_plain_prompt_matches_diffusers_encoding(sd1, sd_pipeline):
    prompt = "a photo of an astronaut riding a horse on mars"
    (conditioning,) = CLIPTextEncode().encode(sd1[1], prompt)
    positive, negative = sd_pipeline.encode_prompt(prompt, "cpu", 1, True, "")
    assert torch.equal(conditioning[0][0], positive)
    (empty,) = CLIPTextEncode().encode(sd1[1], "")
    assert torch.equal(empty[0][0], negative)


def test_weights_scale_away_from_the_empty_prompt(sd1):
    clip = sd1[1]
    plain = CLIPTextEncode().encode(clip, "a red cat")[0][0][0]
    weighted = CLIPTextEncode().encode(clip, "a (red:1.5) cat")[0][0][0]
    empty = CLIPTextEncode().encode(clip, "")[0][0][0]
    red = 2  # start token, "a", then "red"
    assert torch.allclose(weighted[:, red], (plain[:, red] - empty[:, red]) * 1.5 + empty[:, red], atol=1e-5)
    assert torch.allclose(weighted[:, 1], plain[:, 1], atol=1e-5)


def test_clip_set_last_layer_reads_an_earlier_layer(sd1):
    clip = sd1[1]
    (skipped,) = CLIPSetLastLayer().set_last_layer(clip, -2)
    assert skipped.layer_index == -2 and clip.layer_index == -1
    conditioning = CLIPTextEncode().encode(skipped, "a cat")[0][0][0]
    ids = torch.tensor([[token for token, _ in tokenize_weighted(clip.tokenizer, "a cat")[0]]])
    with torch.no_grad():
        hidden = clip.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        expected = clip.text_encoder.final_layer_norm(hidden)
    assert torch.equal(conditioning, expected)
    assert not torch.equal(conditioning, CLIPTextEncode().encode(clip, "a cat")[0][0][0])


def test_clip_layer_out_of_range(sd1):
    with pytest.raises(ValueError, match="stop_at_clip_layer: -3 is outside -1..-2"):
        CLIPSetLastLayer().set_last_layer(sd1[1], -3)
