"""Image and latent nodes: loading with masks, saving without overwriting and with workflow chunks, resizing."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.image import ImageScale, LoadImage, PreviewImage, SaveImage
from nodes.latent import EmptyLatentImage, LatentUpscale, LatentUpscaleBy, VAEDecode, VAEEncode
from tests.nodes.conftest import validation_errors


def test_empty_latent_shape():
    (latent,) = EmptyLatentImage().generate(64, 48, 3)
    assert latent["samples"].shape == (3, 4, 6, 8) and not latent["samples"].any()


@pytest.mark.parametrize("width, height, name", [(60, 64, "width"), (64, 36, "height")])
def test_sizes_must_be_multiples_of_8(width, height, name):
    value = width if name == "width" else height
    errors = validation_errors({
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "2": {"class_type": "LatentUpscale", "inputs": {"samples": ["1", 0], "upscale_method": "bilinear",
                                                        "width": width, "height": height, "crop": "disabled"}}})
    for node_id in ("1", "2"):
        (error,) = errors[node_id]
        assert error["extra_info"]["input_name"] == name
        assert error["message"] == f"Value {value} is not a multiple of 8"


def test_load_image_with_alpha_gives_mask(node_env):
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    rgba[:5, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(node_env.folders.input_dir / "half.png")
    image, mask = LoadImage().load_image("half.png")
    assert image.shape == (1, 10, 12, 3) and mask.shape == (1, 10, 12)
    assert torch.all(image[..., 0] == 1.0) and torch.all(image[..., 1] == 0.0)
    assert torch.all(mask[0, :5] == 1.0) and torch.all(mask[0, 5:] == 0.0)
    assert "half.png" in LoadImage.INPUT_TYPES()["required"]["image"][0]
    assert LoadImage.IS_CHANGED("half.png") == LoadImage.IS_CHANGED("half.png")


def test_load_image_without_alpha_and_animation_frames(node_env):
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(node_env.folders.input_dir / "anim.gif", save_all=True, append_images=frames[1:])
    image, mask = LoadImage().load_image("anim.gif")
    assert image.shape == (2, 8, 8, 3) and not mask.any()
    assert image[0, 0, 0, 0] > 0.9 and image[1, 0, 0, 2] > 0.9


def test_not_an_image_is_a_clear_error(node_env):
    (node_env.folders.input_dir / "fake.png").write_text("definitely not a png")
    with pytest.raises(ValueError, match="image: fake.png is not a readable image"):
        LoadImage().load_image("fake.png")


def test_save_image_never_overwrites_and_embeds_the_workflow(node_env):
    images = torch.rand(2, 16, 24, 3)
    prompt = {"1": {"class_type": "SaveImage", "inputs": {}}}
    workflow = {"nodes": [], "links": []}
    first = SaveImage().save_images(images, "run/test", prompt, {"workflow": workflow})
    second = SaveImage().save_images(images[:1], "run/test", prompt, {"workflow": workflow})
    names = [entry["filename"] for entry in first["ui"]["images"] + second["ui"]["images"]]
    assert names == ["test_00001_.png", "test_00002_.png", "test_00003_.png"]
    assert all(entry["subfolder"] == "run" and entry["type"] == "output" for entry in first["ui"]["images"])
    saved = Image.open(node_env.folders.output_dir / "run" / "test_00001_.png")
    assert json.loads(saved.text["prompt"]) == prompt and json.loads(saved.text["workflow"]) == workflow
    expected = np.clip(255 * images[0].numpy(), 0, 255).astype(np.uint8)  # truncated, as ComfyUI saves
    assert np.array_equal(np.asarray(saved), expected)


def test_save_image_refuses_paths_outside_the_output_folder(node_env):
    with pytest.raises(ValueError, match="filename_prefix: '../escape' points outside"):
        SaveImage().save_images(torch.rand(1, 8, 8, 3), "../escape")
    assert not list(node_env.folders.output_dir.iterdir())


def test_preview_image_goes_to_temp(node_env):
    result = PreviewImage().save_images(torch.rand(1, 8, 8, 3))
    (entry,) = result["ui"]["images"]
    assert entry["type"] == "temp" and (node_env.folders.temp_dir / entry["filename"]).is_file()
    assert not list(node_env.folders.output_dir.iterdir())


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"])
def test_image_scale(method):
    image = torch.rand(2, 20, 40, 3)
    (scaled,) = ImageScale().upscale(image, method, 80, 0, "disabled")
    assert scaled.shape == (2, 40, 80, 3)
    (cropped,) = ImageScale().upscale(image, method, 16, 16, "center")
    assert cropped.shape == (2, 16, 16, 3)


def test_center_crop_keeps_the_middle():
    image = torch.zeros(1, 10, 30, 3)
    image[:, :, 10:20] = 1.0
    (cropped,) = ImageScale().upscale(image, "nearest-exact", 10, 10, "center")
    assert torch.all(cropped == 1.0)


def test_latent_upscale_and_upscale_by():
    latent = {"samples": torch.rand(1, 4, 8, 8), "batch_index": [0]}
    (bigger,) = LatentUpscale().upscale(latent, "bilinear", 128, 96, "disabled")
    assert bigger["samples"].shape == (1, 4, 12, 16) and bigger["batch_index"] == [0]
    (by,) = LatentUpscaleBy().upscale(latent, "nearest-exact", 1.5)
    assert by["samples"].shape == (1, 4, 12, 12)


def test_vae_round_trip_shapes_and_crop(sd1):
    vae = sd1[2]
    (latent,) = VAEEncode().encode(vae, torch.rand(1, 70, 64, 3))  # 70 rows: cropped to 64 like ComfyUI
    assert latent["samples"].shape == (1, 4, 8, 8)
    (image,) = VAEDecode().decode(vae, latent)
    assert image.shape == (1, 64, 64, 3) and image.min() >= 0 and image.max() <= 1
    with pytest.raises(ValueError, match="pixels: images of 4x4 are smaller than 8 pixels"):
        VAEEncode().encode(vae, torch.rand(1, 4, 4, 3))
