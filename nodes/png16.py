"""Encoding 16-bit-per-channel PNGs (greyscale, RGB, RGBA), which pillow cannot write, with text chunks.

Plain PNG: the signature, IHDR, one tEXt chunk per (keyword, text), IDAT (zlib of the rows, each with filter 0,
samples big-endian) and IEND. Knows nothing of nodes, folders or tensors.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode(pixels: np.ndarray, texts: list[tuple[str, str]] = (), compress_level: int = 6) -> bytes:
    """`pixels` uint16 [height, width, channels] (1-4 channels) as PNG bytes, with latin-1 tEXt chunks."""
    if pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[-1] not in COLOR_TYPES:
        raise ValueError(f"expected uint16 [height, width, 1-4 channels], got {pixels.dtype} {pixels.shape}")
    height, width, channels = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 16, COLOR_TYPES[channels], 0, 0, 0)
    rows = np.ascontiguousarray(pixels.astype(">u2")).view(np.uint8).reshape(height, width * channels * 2)
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rows], axis=1).tobytes()
    text_chunks = b"".join(chunk(b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1", "replace"))
                           for key, text in texts)
    return SIGNATURE + chunk(b"IHDR", header) + text_chunks + chunk(b"IDAT", zlib.compress(raw, compress_level)) \
        + chunk(b"IEND", b"")
