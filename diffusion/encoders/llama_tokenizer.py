"""Llama 3's tokenizer without a hub (Llama 3.1 8B Instruct's: HiDream's fourth text encoder), rebuilt from the
tiktoken ranks Meta's `llama_models` package ships (`llama_models/llama3/tokenizer.model`; pinned in
requirements-nodeps.txt, its code never imported) with Llama 3's pre-tokenization pattern and its 256 special tokens
(`<|begin_of_text|>` is 128000, `<|eot_id|>` 128009), as that package's own tokenizer defines them. The ranks are the
token ids (transformers' TikTokenConverter makes the merges). Text encoder files (ComfyUI's
`llama_3.1_8b_instruct_*.safetensors`) carry no tokenizer; this is theirs. The tiny models use a byte-level
tokenizer with the same special tokens after the 256 bytes. Knows nothing of nodes or families."""
from __future__ import annotations

import functools
from typing import Any

from diffusion.encoders.qwen_tokenizer import byte_level_bpe

PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
           r"|\s+(?!\S)|\s+")
REGULAR_TOKENS = 128000
_NAMED_SPECIAL_TOKENS = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
    "<|eot_id|>", "<|python_tag|>", "<|image|>")
SPECIAL_TOKENS = _NAMED_SPECIAL_TOKENS + tuple(
    f"<|reserved_special_token_{2 + index}|>" for index in range(256 - len(_NAMED_SPECIAL_TOKENS)))
BEGIN_OF_TEXT, END_OF_TURN = "<|begin_of_text|>", "<|eot_id|>"
TINY_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


@functools.lru_cache(maxsize=1)
def llama3_tokenizer() -> Any:
    """Llama 3's real tokenizer as a transformers fast tokenizer (built once per process)."""
    import importlib.resources

    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = importlib.resources.files("llama_models") / "llama3" / "tokenizer.model"
    return _wrapped(TikTokenConverter(vocab_file=str(ranks), pattern=PATTERN,
                                      extra_special_tokens=list(SPECIAL_TOKENS)).converted())


@functools.lru_cache(maxsize=1)
def tiny_llama3_tokenizer() -> Any:
    """The project's byte-level tokenizer for tiny Llama models: the 256 bytes, then Llama 3's special tokens."""
    return _wrapped(byte_level_bpe(SPECIAL_TOKENS))


def _wrapped(tokenizer: Any) -> Any:
    """A transformers tokenizer that puts `<|begin_of_text|>` first, as Llama 3's published tokenizer does."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BEGIN_OF_TEXT} $A", pair=f"{BEGIN_OF_TEXT} $A {BEGIN_OF_TEXT} $B",
        special_tokens=[(BEGIN_OF_TEXT, tokenizer.token_to_id(BEGIN_OF_TEXT))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BEGIN_OF_TEXT, eos_token=END_OF_TURN,
                                   pad_token=END_OF_TURN, model_max_length=1 << 30)


def llama3_tokenizer_for_vocab(vocab_size: int, input_name: str) -> Any:
    """The tokenizer of a Llama 3 text encoder file whose embedding has `vocab_size` rows."""
    if vocab_size == TINY_VOCAB_SIZE:
        return tiny_llama3_tokenizer()
    if vocab_size == REGULAR_TOKENS + len(SPECIAL_TOKENS):
        return llama3_tokenizer()
    raise ValueError(f"{input_name}: a Llama text encoder with {vocab_size} token embeddings is not Llama 3's "
                     f"({REGULAR_TOKENS + len(SPECIAL_TOKENS)}) nor the project's tiny one ({TINY_VOCAB_SIZE})")
