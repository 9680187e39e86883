"""Mask nodes with ComfyUI's semantics and tensor conventions, and the editing nodes' handling of bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

from nodes.image_batch import LoadImagesFromDir
from nodes.inpaint import InstructPixToPixConditioning, SetLatentNoiseMask, VAEEncodeForInpaint
from nodes.mask import FeatherMask, GrowMask, ImageCompositeMasked, ImageToMask, InvertMask, LoadImageMask, MaskToImage


def test_load_image_mask_channels(node_env):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :3, 3] = 255  # left half opaque
    Image.fromarray(rgba, "RGBA").save(node_env.folders.input_dir / "rgba.png")
    (alpha,) = LoadImageMask().load_image("rgba.png", "alpha")
    assert alpha.shape == (1, 4, 6) and alpha.dtype == torch.float32
    assert torch.equal(alpha[0, :, :3], torch.zeros(4, 3)) and torch.equal(alpha[0, :, 3:], torch.ones(4, 3))
    (red,) = LoadImageMask().load_image("rgba.png", "red")
    assert torch.equal(red, torch.ones(1, 4, 6))


def test_load_image_mask_without_alpha_and_non_rgb_images(node_env):
    Image.new("L", (8, 8), 255).save(node_env.folders.input_dir / "grey.png")
    with pytest.raises(ValueError, match="^channel: grey.png has no alpha channel"):
        LoadImageMask().load_image("grey.png", "alpha")
    (mask,) = LoadImageMask().load_image("grey.png", "green")
    assert torch.equal(mask, torch.ones(1, 8, 8))
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(node_env.folders.input_dir / "cmyk.jpg")
    (mask,) = LoadImageMask().load_image("cmyk.jpg", "blue")
    assert mask.shape == (1, 8, 8) and mask.min() > 0.95
    (node_env.folders.input_dir / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="^image: broken.png is not a readable image"):
        LoadImageMask().load_image("broken.png", "red")


def test_image_mask_conversions_and_invert():
    image = torch.rand(2, 5, 7, 3)
    (green,) = ImageToMask().image_to_mask(image, "green")
    assert torch.equal(green, image[..., 1])
    with pytest.raises(ValueError, match="^channel: the image has 3 channels and no alpha"):
        ImageToMask().image_to_mask(image, "alpha")
    (grey,) = ImageToMask().image_to_mask(image[..., :1], "blue")
    assert torch.equal(grey, image[..., 0])
    (shown,) = MaskToImage().mask_to_image(green)
    assert shown.shape == (2, 5, 7, 3) and torch.equal(shown[..., 2], green)
    (inverted,) = InvertMask().invert(green)
    assert torch.allclose(inverted, 1 - green)


def test_grow_and_shrink_mask():
    mask = torch.zeros(1, 9, 9)
    mask[0, 4, 4] = 1
    (square,) = GrowMask().expand_mask(mask, 2, False)
    assert square[0].sum() == 25 and square[0, 2:7, 2:7].min() == 1
    (diamond,) = GrowMask().expand_mask(mask, 2, True)
    assert diamond[0].sum() == 13 and diamond[0, 2, 2] == 0 and diamond[0, 2, 4] == 1
    (shrunk,) = GrowMask().expand_mask(square, -2, False)
    assert torch.equal(shrunk, mask)


def test_feather_mask_ramps():
    mask = torch.ones(1, 4, 10)
    (feathered,) = FeatherMask().feather(mask, 4, 0, 2, 0)
    row = feathered[0, 0]
    assert torch.allclose(row, torch.tensor([0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1.0, 0.5]))
    (feathered,) = FeatherMask().feather(mask, 0, 2, 0, 0)
    assert torch.allclose(feathered[0, :, 0], torch.tensor([0.5, 1, 1, 1.0]))


def test_image_composite_masked():
    destination = torch.zeros(1, 8, 8, 3)
    source = torch.ones(1, 4, 4, 3)
    (plain,) = ImageCompositeMasked().composite(destination, source, 2, 3, False)
    assert plain[0, 3:7, 2:6].min() == 1 and plain.sum() == 16 * 3
    (clipped,) = ImageCompositeMasked().composite(destination, source, 6, 6, False)
    assert clipped.sum() == 4 * 3
    mask = torch.zeros(1, 4, 4)
    mask[0, :2] = 1
    (masked,) = ImageCompositeMasked().composite(destination, source, 0, 0, False, mask)
    assert masked[0, :2, :4].min() == 1 and masked[0, 2:].max() == 0
    (resized,) = ImageCompositeMasked().composite(destination, source, 0, 0, True)
    assert resized.min() == 1
    assert destination.max() == 0  # the input is not modified


@pytest.fixture
def vae(sd1):
    return sd1[2]


def test_vae_encode_for_inpaint_masks_and_grows(vae):
    pixels = torch.rand(1, 64, 64, 3)
    mask = torch.zeros(1, 64, 64)
    mask[0, 16:32, 16:32] = 1
    (latent,) = VAEEncodeForInpaint().encode(vae, pixels, mask, grow_mask_by=6)
    assert latent["samples"].shape == (1, 4, 8, 8) and latent["noise_mask"].shape == (1, 1, 64, 64)
    assert latent["noise_mask"].sum() > mask.sum()
    greyed = pixels.clone()
    greyed[0, 16:32, 16:32] = 0.5
    assert torch.allclose(latent["samples"], vae.encode(greyed), atol=1e-5)


def test_mask_of_another_size_is_resized_or_refused(vae):
    pixels = torch.rand(1, 64, 64, 3)
    half = torch.zeros(1, 32, 32)
    half[0, 8:16, 8:16] = 1
    (latent,) = VAEEncodeForInpaint().encode(vae, pixels, half, grow_mask_by=0)
    assert latent["noise_mask"].shape == (1, 1, 64, 64) and latent["noise_mask"][0, 0, 20, 20] == 1
    with pytest.raises(ValueError, match="^mask: the mask is 48x32 but the image is 64x64"):
        VAEEncodeForInpaint().encode(vae, pixels, torch.ones(1, 32, 48), grow_mask_by=0)
    with pytest.raises(ValueError, match="^mask: the mask is 16x8 but the image is 8x8"):
        SetLatentNoiseMask().set_mask({"samples": torch.zeros(1, 4, 8, 8)}, torch.ones(1, 8, 16))


def test_empty_mask_is_refused(vae):
    with pytest.raises(ValueError, match="^mask: the mask is empty"):
        VAEEncodeForInpaint().encode(vae, torch.rand(1, 64, 64, 3), torch.zeros(1, 64, 64), grow_mask_by=6)
    with pytest.raises(ValueError, match="^mask: the mask is empty"):
        SetLatentNoiseMask().set_mask({"samples": torch.zeros(1, 4, 8, 8)}, torch.full((1, 64, 64), 0.2))


def test_sides_not_multiple_of_8_are_resized_down_and_other_channels_converted(vae):
    grey = torch.rand(1, 70, 67, 1)
    mask = torch.ones(1, 70, 67)
    (latent,) = VAEEncodeForInpaint().encode(vae, grey, mask, grow_mask_by=0)
    assert latent["samples"].shape == (1, 4, 8, 8) and latent["noise_mask"].shape == (1, 1, 64, 64)
    rgba = torch.rand(2, 64, 64, 4)
    positive, negative, empty = InstructPixToPixConditioning().encode([[torch.zeros(1, 77, 64), {}]],
                                                                      [[torch.zeros(1, 77, 64), {}]], vae, rgba)
    assert empty["samples"].shape == (2, 4, 8, 8) and positive[0][1]["concat_latent_image"].shape == (2, 4, 8, 8)
    with pytest.raises(ValueError, match="^pixels: expected an IMAGE"):
        VAEEncodeForInpaint().encode(vae, torch.rand(1, 64, 64, 2), mask, grow_mask_by=0)
    with pytest.raises(ValueError, match="^pixels: 7x7 is smaller than 8 pixels"):
        InstructPixToPixConditioning().encode([], [], vae, torch.rand(1, 7, 7, 3))


def test_load_images_from_dir(node_env):
    folder = node_env.folders.input_dir / "photos"
    folder.mkdir()
    Image.new("RGB", (16, 8), (255, 0, 0)).save(folder / "1.png")
    Image.new("LA", (32, 16), (128, 0)).save(folder / "2.png")
    Image.new("P", (16, 8)).save(folder / "3.gif")
    (folder / "notes.txt").write_text("not an image")
    images, masks, count = LoadImagesFromDir().load_images("photos")
    assert count == 3 and images.shape == (3, 8, 16, 3) and masks.shape == (3, 8, 16)
    assert masks[1].min() == 1 and masks[0].max() == 0
    images, _, count = LoadImagesFromDir().load_images("photos", image_load_cap=1, start_index=1)
    assert count == 1 and torch.allclose(images[0, 0, 0], torch.full((3,), 128 / 255))
    with pytest.raises(ValueError, match="^directory: '../..' points outside"):
        LoadImagesFromDir().load_images("../..")
    with pytest.raises(ValueError, match="^directory: no images in 'photos'"):
        LoadImagesFromDir().load_images("photos", start_index=5)
