"""Qwen's tokenizer rebuilt from the ranks a package ships gives Qwen's real ids (values published with Qwen2's and
Qwen-Image's code: the chat template, the 34-token system prompt diffusers' QwenImagePipeline drops)."""
import pytest

from diffusion.encoders import qwen_tokenizer

MAX_LENGTH = 1024


@pytest.fixture(scope="module")
def tokenizer():
    return qwen_tokenizer.qwen_tokenizer(qwen_tokenizer.QWEN25_SPECIAL_TOKENS, MAX_LENGTH)


def test_real_ids(tokenizer):
    assert tokenizer("<|im_start|>system\nYou are a helpful assistant.").input_ids == [
        151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13]
    assert tokenizer("Hello world").input_ids == [9707, 1879]
    assert tokenizer("user\n").input_ids == [872, 198]  # what ComfyUI's Qwen-Image encoder looks for
    assert tokenizer("12").input_ids == [16, 17]  # one digit per token


def test_special_tokens_and_qwen_image_system_prompt(tokenizer):
    assert tokenizer("<|vision_start|><|image_pad|><|vision_end|>").input_ids == [151652, 151655, 151653]
    system = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
              "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n")
    assert len(tokenizer(system).input_ids) == 34
    assert tokenizer.decode(tokenizer("héllo wörld").input_ids) == "héllo wörld"


def test_vocabulary_choice():
    tiny = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    small = qwen_tokenizer.tokenizer_for_vocab(259, qwen_tokenizer.QWEN3_SPECIAL_TOKENS, tiny, 64, "Qwen3", "clip")
    assert small("<|im_end|>a").input_ids == [258, small.convert_tokens_to_ids("a")]
    real = qwen_tokenizer.tokenizer_for_vocab(151936, qwen_tokenizer.QWEN3_SPECIAL_TOKENS, tiny, 64, "Qwen3", "clip")
    assert real.convert_tokens_to_ids("</think>") == 151668
    with pytest.raises(ValueError, match="clip: a Qwen3 text encoder with 1000 token embeddings"):
        qwen_tokenizer.tokenizer_for_vocab(1000, qwen_tokenizer.QWEN3_SPECIAL_TOKENS, tiny, 64, "Qwen3", "clip")
