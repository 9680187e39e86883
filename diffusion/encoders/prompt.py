"""Prompt text to weighted CLIP token chunks: ComfyUI's `(word:1.2)` emphasis syntax and 77-token chunks.

A prompt is split into weighted segments, tokenized, and packed into chunks of 75 tokens between start and
end tokens (a short word never straddles two chunks); the families' CLIP encoders encode the chunks and
concatenate them along the sequence, so long prompts are kept, not cut, and move a token's embedding away from
the empty prompt's at that position by its weight, as ComfyUI does. Knows nothing of nodes, files or models.
"""
from __future__ import annotations

from typing import Any

CHUNK_TOKENS = 75  # 77 positions minus the start and end tokens
LARGE_WORD_TOKENS = 8  # words at least this long may be split across chunks
PAREN_WEIGHT = 1.1  # "(word)" without an explicit weight
_ESCAPES = (("\\(", "\0\1"), ("\\)", "\0\2"))


def _escape(text: str) -> str:
    for plain, marker in _ESCAPES:
        text = text.replace(plain, marker)
    return text


def _unescape(text: str) -> str:
    for plain, marker in _ESCAPES:
        text = text.replace(marker, plain[1:])
    return text


def _split_parentheses(text: str) -> list[str]:
    """Top-level pieces of `text`: plain runs and balanced "( ... )" groups (unbalanced ")" stays text)."""
    pieces: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "(":
            if depth == 0 and current:
                pieces.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")" and depth > 0:
            depth -= 1
            current += char
            if depth == 0:
                pieces.append(current)
                current = ""
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def _weighted(text: str, weight: float) -> list[tuple[str, float]]:
    segments: list[tuple[str, float]] = []
    for piece in _split_parentheses(text):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner = piece[1:-1]
            inner_weight = weight * PAREN_WEIGHT
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass
            segments.extend(_weighted(inner, inner_weight))
        else:
            segments.append((piece, weight))
    return segments


def parse_prompt_weights(text: str) -> list[tuple[str, float]]:
    """ComfyUI emphasis: "(a:1.3)" weighs a by 1.3, "(a)" by 1.1 (nesting multiplies), "\\(" is a literal "(".

    >>> parse_prompt_weights("a (b:1.5) c")
    [('a ', 1.0), ('b', 1.5), (' c', 1.0)]
    """
    return [(_unescape(segment), weight) for segment, weight in _weighted(_escape(text), 1.0) if segment]


def tokenize_weighted(tokenizer: Any, text: str, word_ids: bool = False) -> list[list[tuple[Any, ...]]]:
    """(token id, weight) chunks of exactly 77 positions: start, up to 75 tokens, end, padding. With `word_ids`,
    (token id, weight, word id) as ComfyUI's `tokenize(return_word_ids=True)` gives them: each word of the prompt
    numbered from 1 in order, 0 for the start, end and padding tokens."""
    words: list[list[tuple[int, float, int]]] = []
    for segment, weight in parse_prompt_weights(text):
        for word in segment.replace("\n", " ").split(" "):
            if word:
                ids = tokenizer(word, add_special_tokens=False)["input_ids"]
                words.append([(token, weight, len(words) + 1) for token in ids])
    chunks: list[list[tuple[int, float, int]]] = []
    current: list[tuple[int, float, int]] = []
    for word in words:
        while word:
            room = CHUNK_TOKENS - len(current)
            if len(word) <= room:
                current.extend(word)
                word = []
            elif len(word) >= LARGE_WORD_TOKENS or not current:
                current.extend(word[:room])
                word = word[room:]
                chunks.append(current)
                current = []
            else:
                chunks.append(current)
                current = []
    if current or not chunks:
        chunks.append(current)
    start, end, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    padding = [(pad, 1.0, 0)] * CHUNK_TOKENS
    full = [[(start, 1.0, 0)] + chunk + [(end, 1.0, 0)] + padding[:CHUNK_TOKENS - len(chunk)] for chunk in chunks]
    return full if word_ids else [[entry[:2] for entry in chunk] for chunk in full]
