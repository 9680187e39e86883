"""CLIP tokenizers built from the BPE merge list shipped in `data/`, never from a hub.

CLIP's vocabulary is a deterministic function of its merge list: the 256 byte symbols, the same with `</w>`,
one token per merge in order, then `<|startoftext|>` and `<|endoftext|>`. With all 48,894 merges this gives the
real 49,408-id vocabulary; with fewer merges it gives a smaller, equally valid BPE vocabulary, which is what
the tiny test models use. So a text encoder's embedding row count alone says which tokenizer it needs.
Knows nothing of nodes, files other than the shipped merge list, or models.
"""
from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

MERGES_FILE = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
FULL_MERGE_COUNT = 49152 - 256 - 2  # CLIP uses the first 48,894 merges of the file
BYTE_SYMBOL_COUNT = 512  # 256 byte symbols, then the same with "</w>"
SPECIAL_TOKEN_COUNT = 2
FULL_VOCAB_SIZE = BYTE_SYMBOL_COUNT + FULL_MERGE_COUNT + SPECIAL_TOKEN_COUNT  # 49,408
TINY_VOCAB_SIZE = 1000
MAX_LENGTH = 77
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
SD2_PAD_TOKEN = "!"


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's printable stand-in character for each byte value, in CLIP's vocabulary order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    code_points = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            code_points.append(256 + extra)
            extra += 1
    return [chr(code_point) for code_point in code_points]


@functools.lru_cache(maxsize=1)
def clip_merges() -> tuple[tuple[str, str], ...]:
    """The first 48,894 merges of the shipped CLIP merge list (the header line skipped)."""
    lines = gzip.decompress(MERGES_FILE.read_bytes()).decode("utf-8").split("\n")
    return tuple(tuple(line.split()) for line in lines[1:FULL_MERGE_COUNT + 1])  # type: ignore[misc]


def merge_count_for_vocab_size(vocab_size: int) -> int:
    merge_count = vocab_size - BYTE_SYMBOL_COUNT - SPECIAL_TOKEN_COUNT
    if not 0 <= merge_count <= FULL_MERGE_COUNT:
        raise ValueError(
            f"no CLIP tokenizer has {vocab_size} tokens (between {BYTE_SYMBOL_COUNT + SPECIAL_TOKEN_COUNT} "
            f"and {FULL_VOCAB_SIZE})")
    return merge_count


@functools.lru_cache(maxsize=8)
def clip_tokenizer(vocab_size: int = FULL_VOCAB_SIZE, pad_token: str = END_TOKEN) -> "CLIPTokenizer":
    """A CLIP tokenizer with `vocab_size` ids (49,408 is the real one); SD2 checkpoints pad with "!"."""
    from transformers import CLIPTokenizer

    merges = list(clip_merges()[:merge_count_for_vocab_size(vocab_size)])
    symbols = _bytes_to_unicode()
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges]
    tokens += [START_TOKEN, END_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, unk_token=END_TOKEN, bos_token=START_TOKEN,
                         eos_token=END_TOKEN, pad_token=pad_token, model_max_length=MAX_LENGTH)
