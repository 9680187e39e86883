"""The example pack's own tests: call the nodes directly, as any pack can."""
import pytest
import torch

from example_pack.adjust import ImageBlur, ImageBrightness, ImageContrast, SolidColor, TextOverlay


@pytest.fixture
def grey():
    return SolidColor().make(16, 8, "#808080", 2)[0]


def test_solid_color_follows_the_image_convention(grey):
    assert grey.shape == (2, 8, 16, 3) and grey.dtype == torch.float32
    assert torch.allclose(grey, torch.full_like(grey, 128 / 255))


def test_brightness_scales_and_clips(grey):
    assert torch.allclose(ImageBrightness().adjust(grey, 0.5)[0], grey * 0.5)
    assert ImageBrightness().adjust(grey, 4.0)[0].max() == 1.0


def test_contrast_zero_gives_the_mean():
    image = torch.rand(1, 4, 4, 3, generator=torch.Generator().manual_seed(0))
    flat = ImageContrast().adjust(image, 0.0)[0]
    assert torch.allclose(flat, image.mean().expand_as(image))


def test_blur_smooths_an_edge():
    image = torch.zeros(1, 16, 16, 3)
    image[:, :, 8:] = 1.0
    blurred = ImageBlur().blur(image, 2.0)[0]
    assert 0.1 < blurred[0, 8, 7, 0] < 0.9
    assert ImageBlur().blur(image, 0.0)[0].allclose(image)


def test_text_overlay_draws_and_validates_colour(grey):
    drawn = TextOverlay().overlay(grey, "hi", 1, 1, "#ff0000")[0]
    assert (drawn != grey).any()
    assert TextOverlay.VALIDATE_INPUTS("#ff0000") is True
    assert "not a colour" in TextOverlay.VALIDATE_INPUTS("nope")
