import pytest

from diffusion.encoders import clip_tokenizer as tok


def test_full_vocabulary_gives_clip_ids():
    clip = tok.clip_tokenizer()
    ids = clip("a photo of an astronaut riding a horse on Mars!").input_ids
    assert ids == [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496, 256, 49407]
    assert len(clip) == tok.FULL_VOCAB_SIZE == 49408
    assert clip.pad_token_id == 49407 and clip.model_max_length == 77


def test_sd2_tokenizer_pads_with_exclamation_mark():
    assert tok.clip_tokenizer(pad_token=tok.SD2_PAD_TOKEN).pad_token_id == 0


def test_tiny_vocabulary_is_a_prefix_of_clip_bpe():
    tiny = tok.clip_tokenizer(tok.TINY_VOCAB_SIZE)
    assert len(tiny) == tok.TINY_VOCAB_SIZE
    ids = tiny("a photo of an astronaut").input_ids
    assert ids[0] == tok.TINY_VOCAB_SIZE - 2 and ids[-1] == tok.TINY_VOCAB_SIZE - 1
    assert max(ids) < tok.TINY_VOCAB_SIZE
    # tokens the small vocabulary has keep the real ids ("a" is 320 in both)
    assert ids[1] == 320


def test_impossible_vocabulary_size_is_refused():
    with pytest.raises(ValueError, match="no CLIP tokenizer has 100 tokens"):
        tok.clip_tokenizer(100)
