"""Prompt text to CONDITIONING: ComfyUI's `(word:1.2)` emphasis syntax, 77-token chunks, CLIP layer choice.

A prompt is split into weighted segments, tokenized, and packed into chunks of 75 tokens between start and
end tokens (a short word never straddles two chunks); chunks are encoded and concatenated along the sequence,
so long prompts are kept, not cut. A weight w moves a token's embedding away from the empty prompt's
embedding at that position by w, as ComfyUI does. Without emphasis, a prompt of up to 75 tokens encodes
exactly as diffusers' StableDiffusionPipeline encodes it. Knows nothing of nodes or files.
"""
from __future__ import annotations

from typing import Any

import torch

from nodes.models.components import ClipTextEncoder
from nodes.models.lora import TEXT_ENCODER, lora_applied

CHUNK_TOKENS = 75  # 77 positions minus the start and end tokens
LARGE_WORD_TOKENS = 8  # words at least this long may be split across chunks
PAREN_WEIGHT = 1.1  # "(word)" without an explicit weight
_ESCAPES = (("\\(", "\0\1"), ("\\)", "\0\2"))

Conditioning = list[list[Any]]  # [[embeddings [1, 77*k, width], {"pooled_output": [1, width]}], ...]


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


def tokenize_weighted(tokenizer: Any, text: str) -> list[list[tuple[int, float]]]:
    """(token id, weight) chunks of exactly 77 positions: start, up to 75 tokens, end, padding."""
    words: list[list[tuple[int, float]]] = []
    for segment, weight in parse_prompt_weights(text):
        for word in segment.replace("\n", " ").split(" "):
            if word:
                ids = tokenizer(word, add_special_tokens=False)["input_ids"]
                words.append([(token, weight) for token in ids])
    chunks: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
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
    padding = [(pad, 1.0)] * CHUNK_TOKENS
    return [[(start, 1.0)] + chunk + [(end, 1.0)] + padding[:CHUNK_TOKENS - len(chunk)] for chunk in chunks]


def _encode_ids(clip: ClipTextEncoder, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states of the chosen layer (final layer norm applied, as diffusers' clip_skip) and pooled output."""
    text_encoder = clip.text_encoder
    ids = ids.to(text_encoder.device)
    if clip.layer_index == -1:
        output = text_encoder(ids)
        return output.last_hidden_state, output.pooler_output
    output = text_encoder(ids, output_hidden_states=True)
    final_norm = getattr(text_encoder, "final_layer_norm", None) or text_encoder.text_model.final_layer_norm
    return final_norm(output.hidden_states[clip.layer_index]), output.pooler_output


@torch.inference_mode()
def encode_prompt(clip: ClipTextEncoder, text: str) -> Conditioning:
    """A prompt as ComfyUI CONDITIONING: [[embeddings [1, 77*chunks, width] float32 CPU, {"pooled_output"}]]."""
    chunks = tokenize_weighted(clip.tokenizer, text)
    weights = torch.tensor([[weight for _, weight in chunk] for chunk in chunks])
    ids = torch.tensor([[token for token, _ in chunk] for chunk in chunks])
    weighted = bool((weights != 1.0).any())
    if weighted:
        ids = torch.cat([ids, torch.tensor([[token for token, _ in tokenize_weighted(clip.tokenizer, "")[0]]])])
    with lora_applied(clip.text_encoder, TEXT_ENCODER, clip.loras):
        hidden, pooled = _encode_ids(clip, ids)
    hidden = hidden.float().cpu()
    if weighted:
        empty = hidden[-1:]
        hidden = hidden[:-1]
        hidden = (hidden - empty) * weights.unsqueeze(-1) + empty
    embeddings = hidden.reshape(1, -1, hidden.shape[-1])
    return [[embeddings, {"pooled_output": pooled[:1].float().cpu()}]]
