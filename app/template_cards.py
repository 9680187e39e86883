"""Preview cards of workflow templates without a picture of their own: ComfyUI's frontend shows an image for every
template in its templates browser (`<name>.jpg` beside a pack's template), and our shipped workflows have none, so
each gets a card with its name, in a colour derived from the name."""
from __future__ import annotations

import hashlib
import io

from PIL import Image, ImageDraw

CARD_SIZE = 256


def card_jpeg(title: str) -> bytes:
    """A CARD_SIZE-square JPEG: `title` (underscores as spaces, wrapped) on a colour of its own."""
    digest = hashlib.sha256(title.encode("utf-8")).digest()
    background = tuple(40 + value % 120 for value in digest[:3])
    image = Image.new("RGB", (CARD_SIZE, CARD_SIZE), background)
    draw = ImageDraw.Draw(image)
    words, lines = title.replace("_", " ").split(), [""]
    for word in words:
        candidate = f"{lines[-1]} {word}".strip()
        if draw.textlength(candidate) > CARD_SIZE - 32 and lines[-1]:
            lines.append(word)
        else:
            lines[-1] = candidate
    top = CARD_SIZE // 2 - 8 * len(lines)
    for index, line in enumerate(lines):
        draw.text((16, top + 16 * index), line, fill=(240, 240, 240))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
