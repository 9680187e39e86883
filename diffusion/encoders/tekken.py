"""Mistral's Tekken tokenizer as a transformers tokenizer, built from the tekken.json a text encoder file carries.

Tekken is a byte-level BPE given as ranked byte strings (as tiktoken's files are) after a block of special tokens
(`default_num_special_tokens`, 1,000 in Mistral Small 3.x: `<unk>`, `<s>`, `</s>`, `[INST]`, ... then
`<SPECIAL_n>` fillers). ComfyUI's Mistral files (FLUX.2 [dev]'s `mistral_3_small_flux2_*.safetensors`) carry their
tekken.json as the uint8 tensor `tekken_model`, so the tokenizer always matches the file. transformers' own
converter turns it into a `tokenizers` BPE. The tiny models carry a tekken.json of the project's own: the 256 bytes
after Mistral Small 3.x's special tokens. Knows nothing of nodes or families.
"""
from __future__ import annotations

import base64
import functools
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

TEKKEN_TENSOR = "tekken_model"  # ComfyUI's name for the tekken.json bytes inside a Mistral text encoder file
# Mistral Small 3.x's special tokens, ranks 0-19 (the rest up to 1,000 are `<SPECIAL_n>` fillers)
MISTRAL_SPECIAL_TOKENS = (
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
    "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]")
SPECIAL_TOKEN_COUNT = 1000
# Tekken's pre-tokenizer pattern (tekken.json's config.pattern in Mistral's files since Mistral NeMo)
PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
           r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|"
           r"\s+(?!\S)|\s+")
TINY_VOCAB_SIZE = SPECIAL_TOKEN_COUNT + 256


def tekken_json(ranks: list[bytes], special_tokens: tuple[str, ...] = MISTRAL_SPECIAL_TOKENS,
                pattern: str = PATTERN) -> bytes:
    """A tekken.json (the format with its special tokens listed, "v7") for BPE `ranks`, as UTF-8 bytes."""
    return json.dumps({
        "config": {"pattern": pattern, "num_vocab_tokens": len(ranks),
                   "default_vocab_size": SPECIAL_TOKEN_COUNT + len(ranks),
                   "default_num_special_tokens": SPECIAL_TOKEN_COUNT, "version": "v7"},
        "vocab": [{"rank": rank, "token_bytes": base64.b64encode(token).decode("ascii"),
                   "token_str": token.decode("utf-8", errors="replace")} for rank, token in enumerate(ranks)],
        "special_tokens": [{"rank": rank, "token_str": token, "is_control": True}
                           for rank, token in enumerate(special_tokens)]}).encode("utf-8")


@functools.lru_cache(maxsize=1)
def tiny_tekken_json() -> bytes:
    """The tiny models' tekken.json: Mistral Small 3.x's special tokens, then the 256 bytes (no merges)."""
    return tekken_json([bytes([value]) for value in range(256)])


def tekken_bytes(tensor: torch.Tensor) -> bytes:
    """The tekken.json bytes of a file's `tekken_model` tensor."""
    return tensor.to(torch.uint8).cpu().numpy().tobytes()


def tekken_tokenizer(data: bytes, input_name: str) -> Any:
    """A transformers tokenizer of a tekken.json (`<s>`, `</s>`, `<pad>`, `<unk>` as its special tokens); it adds
    no tokens of its own, callers add `<s>` where the model wants it. ValueError naming the input for a file that is
    not a tekken.json with its special tokens listed."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.mistral.tokenizer import MistralConverter

    try:
        settings = json.loads(data)
        if "special_tokens" not in settings:
            raise ValueError("it lists no special tokens (a tekken.json older than Mistral Small 3's)")
        with tempfile.TemporaryDirectory(prefix="tekken-") as folder:  # the converter reads a file
            path = Path(folder) / "tekken.json"
            path.write_bytes(data)
            backend = MistralConverter(vocab_file=str(path)).converted()
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise ValueError(f"{input_name}: the file's {TEKKEN_TENSOR} is not a usable tekken.json ({error})") from error
    backend.post_processor = None  # no automatic <s>: ComfyUI adds it itself, before the prompt template
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=1 << 30)
