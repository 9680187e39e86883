"""T5 v1.1's tokenizer shipped in diffusion/encoders/data gives T5's published ids, and the vocabulary size of an
encoder file picks it."""
import pytest

from diffusion.encoders import t5


def test_real_ids():
    tokenizer = t5.t5_tokenizer()
    assert tokenizer("Hello world").input_ids == [8774, 296, 1]
    assert tokenizer("a photo of a cat").input_ids == [3, 9, 1202, 13, 3, 9, 1712, 1]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert len(tokenizer) == 32_100 and tokenizer.convert_tokens_to_ids("<extra_id_0>") == 32_099
    assert tokenizer.decode(tokenizer("A cat holding a sign").input_ids, skip_special_tokens=True) == \
        "A cat holding a sign"


def test_padding_to_the_pipelines_length():
    ids = t5.t5_tokenizer()("Hello world", padding="max_length", max_length=t5.MAX_LENGTH, truncation=True).input_ids
    assert len(ids) == t5.MAX_LENGTH and ids[:4] == [8774, 296, 1, 0]


def test_vocabulary_choice():
    assert t5.t5_tokenizer_for_vocab(32_128, "clip_name1") is t5.t5_tokenizer()
    assert t5.t5_tokenizer_for_vocab(t5.TINY_T5_VOCAB_SIZE, "clip_name1") is t5.tiny_t5_tokenizer()
    with pytest.raises(ValueError, match="clip_name1: a T5 encoder with 250112 tokens is not T5 v1.1's"):
        t5.t5_tokenizer_for_vocab(250_112, "clip_name1")
