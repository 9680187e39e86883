"""Gemma's tokenizer from the SentencePiece model a text encoder file carries: ComfyUI's Gemma files (Lumina 2's
`gemma_2_2b_fp16.safetensors`) hold it as the uint8 tensor `spiece_model`, so the tokenizer always matches the
file. transformers' Gemma converter (which needs the `sentencepiece` package) turns it into a fast tokenizer that
puts `<bos>` first and adds no end token, as ComfyUI's Gemma tokenizer does. Knows nothing of nodes or families."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

SPIECE_TENSOR = "spiece_model"


def gemma_tokenizer(model_proto: torch.Tensor | bytes, max_length: int, input_name: str) -> Any:
    """A transformers GemmaTokenizer of a SentencePiece model (a file's `spiece_model` tensor, or its bytes);
    ValueError naming the input when it is not one."""
    from transformers import GemmaTokenizer

    data = model_proto if isinstance(model_proto, bytes) else model_proto.to(torch.uint8).cpu().numpy().tobytes()
    try:
        with tempfile.TemporaryDirectory(prefix="spiece-") as folder:  # the converter reads a tokenizer.model file
            (Path(folder) / "tokenizer.model").write_bytes(data)
            return GemmaTokenizer.from_pretrained(folder, add_bos_token=True, add_eos_token=False,
                                                  model_max_length=max_length)
    except (OSError, RuntimeError, ValueError, TypeError) as error:
        raise ValueError(f"{input_name}: the file's {SPIECE_TENSOR} is not a usable SentencePiece model "
                         f"({error})") from error
