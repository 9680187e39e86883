"""ComfyUI's ProgressBar preview tuple `(format, PIL image, max_size)` is framed as ComfyUI frames it."""
import struct
from io import BytesIO

from PIL import Image

from server.hub import jpeg_preview


def test_progressbar_preview_tuple_is_framed_in_its_format_and_size():
    frame = jpeg_preview(("PNG", Image.new("RGB", (64, 32), (0, 255, 0)), 16))
    assert struct.unpack(">II", frame[:8]) == (1, 2)  # PREVIEW_IMAGE, PNG
    image = Image.open(BytesIO(frame[8:]))
    assert image.size == (16, 8) and image.getpixel((2, 2)) == (0, 255, 0)


def test_jpeg_tuple_and_non_images():
    frame = jpeg_preview(("JPEG", Image.new("RGB", (8, 8)), 512))
    assert struct.unpack(">II", frame[:8]) == (1, 1) and frame[8:10] == b"\xff\xd8"
    assert jpeg_preview(("JPEG", "not an image", 512)) is None
