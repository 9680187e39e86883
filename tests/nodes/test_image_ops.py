"""The image nodes of nodes/image_ops.py and the save/load nodes of nodes/image.py: their contracts against
ComfyUI's (`COMFYUI_CONTRACTS`, read off nodes.py, comfy_extras/nodes_images.py, nodes_post_processing.py,
nodes_morphology.py, nodes_compositing.py, nodes_rebatch.py and nodes_image_compare.py), their results on tiny
tensors against values worked out by hand or by a plain reference written here from the maths, saved files and
their embedded workflow, and API-format workflows run through the engine (validation + execution)."""
import json
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import nodes
from nodes import image as image_nodes
from nodes import image_ops as ops
from tests.nodes.conftest import validation_errors
from tests.nodes.family_workflows import run_workflow

MAX = 16384
PROMPT_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
RESIZE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

# node: (category, RETURN_TYPES, RETURN_NAMES or None, required inputs, optional inputs), each input as a link
# type, combo choices, (BOOLEAN, default), (STRING, default) or (INT/FLOAT, default, min, max, step or None)
COMFYUI_CONTRACTS: dict[str, tuple] = {
    "EmptyImage": ("image", ("IMAGE",), None, [
        ("width", ("INT", 512, 1, MAX, 1)), ("height", ("INT", 512, 1, MAX, 1)),
        ("batch_size", ("INT", 1, 1, 4096, None)), ("color", ("INT", 0, 0, 0xFFFFFF, 1))], []),
    "ImageBatch": ("image", ("IMAGE",), None, [("image1", "IMAGE"), ("image2", "IMAGE")], []),
    "BatchImagesNode": ("image", ("IMAGE",), None, [("images.image0", "IMAGE"), ("images.image1", "IMAGE")],
                        [(f"images.image{index}", "IMAGE") for index in range(2, 50)]),
    "ImageFromBatch": ("image/batch", ("IMAGE",), None, [
        ("image", "IMAGE"), ("batch_index", ("INT", 0, 0, 4095, None)), ("length", ("INT", 1, 1, 4096, None))], []),
    "RepeatImageBatch": ("image/batch", ("IMAGE",), None, [
        ("image", "IMAGE"), ("amount", ("INT", 1, 1, 4096, None))], []),
    "RebatchImages": ("image/batch", ("IMAGE",), None, [
        ("images", "IMAGE"), ("batch_size", ("INT", 1, 1, 4096, None))], []),
    "ImageCrop": ("image/transform", ("IMAGE",), None, [
        ("image", "IMAGE"), ("width", ("INT", 512, 1, MAX, 1)), ("height", ("INT", 512, 1, MAX, 1)),
        ("x", ("INT", 0, 0, MAX, 1)), ("y", ("INT", 0, 0, MAX, 1))], []),
    "ImageFlip": ("image/transform", ("IMAGE",), None, [
        ("image", "IMAGE"), ("flip_method", ["x-axis: vertically", "y-axis: horizontally"])], []),
    "ImageRotate": ("image/transform", ("IMAGE",), None, [
        ("image", "IMAGE"), ("rotation", ["none", "90 degrees", "180 degrees", "270 degrees"])], []),
    "ImageStitch": ("image/transform", ("IMAGE",), None, [
        ("image1", "IMAGE"), ("direction", ["right", "down", "left", "up"]), ("match_image_size", ("BOOLEAN", True)),
        ("spacing_width", ("INT", 0, 0, 1024, 2)), ("spacing_color", ["white", "black", "red", "green", "blue"])],
        [("image2", "IMAGE")]),
    "ImagePadForOutpaint": ("image", ("IMAGE", "MASK"), None, [
        ("image", "IMAGE"), ("left", ("INT", 0, 0, MAX, 8)), ("top", ("INT", 0, 0, MAX, 8)),
        ("right", ("INT", 0, 0, MAX, 8)), ("bottom", ("INT", 0, 0, MAX, 8)), ("feathering", ("INT", 40, 0, MAX, 1))],
        []),
    "ResizeAndPadImage": ("image/transform", ("IMAGE",), None, [
        ("image", "IMAGE"), ("target_width", ("INT", 512, 1, MAX, 1)), ("target_height", ("INT", 512, 1, MAX, 1)),
        ("padding_color", ["white", "black"]),
        ("interpolation", ["area", "bicubic", "nearest-exact", "bilinear", "lanczos"])], []),
    "GetImageSize": ("image", ("INT", "INT", "INT"), ("width", "height", "batch_size"), [("image", "IMAGE")], []),
    "ImageInvert": ("image", ("IMAGE",), None, [("image", "IMAGE")], []),
    "ImageBlend": ("image/postprocessing", ("IMAGE",), None, [
        ("image1", "IMAGE"), ("image2", "IMAGE"), ("blend_factor", ("FLOAT", 0.5, 0.0, 1.0, 0.01)),
        ("blend_mode", ["normal", "multiply", "screen", "overlay", "soft_light", "difference"])], []),
    "ImageBlur": ("image/postprocessing", ("IMAGE",), None, [
        ("image", "IMAGE"), ("blur_radius", ("INT", 1, 1, 31, 1)), ("sigma", ("FLOAT", 1.0, 0.1, 10.0, 0.1))], []),
    "ImageSharpen": ("image/postprocessing", ("IMAGE",), None, [
        ("image", "IMAGE"), ("sharpen_radius", ("INT", 1, 1, 31, 1)), ("sigma", ("FLOAT", 1.0, 0.1, 10.0, 0.01)),
        ("alpha", ("FLOAT", 1.0, 0.0, 5.0, 0.01))], []),
    "ImageQuantize": ("image/postprocessing", ("IMAGE",), None, [
        ("image", "IMAGE"), ("colors", ("INT", 256, 1, 256, 1)),
        ("dither", ["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"])], []),
    "Morphology": ("image/postprocessing", ("IMAGE",), None, [
        ("image", "IMAGE"), ("operation", ["erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat"]),
        ("kernel_size", ("INT", 3, 3, 999, 1))], []),
    "JoinImageWithAlpha": ("mask/compositing", ("IMAGE",), None, [("image", "IMAGE"), ("alpha", "MASK")], []),
    "SplitImageWithAlpha": ("mask/compositing", ("IMAGE", "MASK"), None, [("image", "IMAGE")], []),
    "PorterDuffImageComposite": ("mask/compositing", ("IMAGE", "MASK"), None, [
        ("source", "IMAGE"), ("source_alpha", "MASK"), ("destination", "IMAGE"), ("destination_alpha", "MASK"),
        ("mode", ["ADD", "CLEAR", "DARKEN", "DST", "DST_ATOP", "DST_IN", "DST_OUT", "DST_OVER", "LIGHTEN", "MULTIPLY",
                  "OVERLAY", "SCREEN", "SRC", "SRC_ATOP", "SRC_IN", "SRC_OUT", "SRC_OVER", "XOR"])], []),
    "ResizeImageMaskNode": ("transform", ("IMAGE,MASK",), ("resized",), [
        ("input", "IMAGE,MASK"),
        ("resize_type", ["scale dimensions", "scale by multiplier", "scale longer dimension",
                         "scale shorter dimension", "scale width", "scale height", "scale total pixels",
                         "match size", "scale to multiple"]),
        ("scale_method", RESIZE_METHODS)], [
        ("resize_type.width", ("INT", 512, 0, MAX, 1)), ("resize_type.height", ("INT", 512, 0, MAX, 1)),
        ("resize_type.crop", ["disabled", "center"]), ("resize_type.multiplier", ("FLOAT", 1.0, 0.01, 8.0, 0.01)),
        ("resize_type.longer_size", ("INT", 512, 0, MAX, 1)), ("resize_type.shorter_size", ("INT", 512, 0, MAX, 1)),
        ("resize_type.megapixels", ("FLOAT", 1.0, 0.01, 16.0, 0.01)), ("resize_type.match", "IMAGE,MASK"),
        ("resize_type.multiple", ("INT", 8, 1, MAX, 1))]),
    "SaveAnimatedWEBP": ("image/animation", (), None, [
        ("images", "IMAGE"), ("filename_prefix", ("STRING", "ComfyUI")), ("fps", ("FLOAT", 6.0, 0.01, 1000.0, 0.01)),
        ("lossless", ("BOOLEAN", True)), ("quality", ("INT", 80, 0, 100, None)),
        ("method", ["default", "fastest", "slowest"])], []),
    "SaveAnimatedPNG": ("image/animation", (), None, [
        ("images", "IMAGE"), ("filename_prefix", ("STRING", "ComfyUI")), ("fps", ("FLOAT", 6.0, 0.01, 1000.0, 0.01)),
        ("compress_level", ("INT", 4, 0, 9, None))], []),
    "SaveImageAdvanced": ("image", ("IMAGE",), ("images",), [
        ("images", "IMAGE"), ("filename_prefix", ("STRING", "ComfyUI")), ("format", ["png", "exr", "avif"])], [
        ("format.bit_depth", ["8-bit", "16-bit"]), ("format.input_color_space", ["sRGB"])]),
    "LoadImageOutput": ("image", ("IMAGE", "MASK"), None, [("image", [])], []),
    # ComfyUI declares compare_view required, but it is a display widget with no value in API prompts
    "ImageCompare": ("image", (), None, [], [("image_a", "IMAGE"), ("image_b", "IMAGE"),
                                             ("compare_view", "IMAGECOMPARE")]),
}
DISPLAY_NAMES = {
    "EmptyImage": "EmptyImage", "ImageBatch": "Batch Images", "BatchImagesNode": "Batch Images",
    "ImageFromBatch": "ImageFromBatch", "RepeatImageBatch": "RepeatImageBatch", "RebatchImages": "Rebatch Images",
    "ImageCrop": "Image Crop", "ImageFlip": "ImageFlip", "ImageRotate": "ImageRotate", "ImageStitch": "Image Stitch",
    "ImagePadForOutpaint": "Pad Image for Outpainting", "ResizeAndPadImage": "ResizeAndPadImage",
    "GetImageSize": "Get Image Size", "ImageInvert": "Invert Image", "ImageBlend": "Image Blend",
    "ImageBlur": "Image Blur", "ImageSharpen": "Image Sharpen", "ImageQuantize": "Image Quantize",
    "Morphology": "ImageMorphology", "JoinImageWithAlpha": "Join Image with Alpha",
    "SplitImageWithAlpha": "Split Image with Alpha", "PorterDuffImageComposite": "Porter-Duff Image Composite",
    "ResizeImageMaskNode": "Resize Image/Mask", "SaveAnimatedWEBP": "SaveAnimatedWEBP",
    "SaveAnimatedPNG": "SaveAnimatedPNG", "SaveImageAdvanced": "Save Image (Advanced)",
    "LoadImageOutput": "Load Image (from Outputs)",
    "ImageCompare": "Image Compare",
}


def _inputs(section: dict) -> list:
    inputs = []
    for name, (kind, *rest) in section.items():
        options = rest[0] if rest else {}
        if isinstance(kind, list):
            inputs.append((name, [] if name == "image" and options.get("image_folder") else kind))
        elif kind in ("INT", "FLOAT"):
            inputs.append((name, (kind, options["default"], options["min"], options["max"], options.get("step"))))
        elif kind in ("BOOLEAN", "STRING"):
            inputs.append((name, (kind, options["default"])))
        else:
            inputs.append((name, kind))
    return inputs


def _contract(node_class: type) -> tuple:
    declared = node_class.INPUT_TYPES()
    return (node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None),
            _inputs(declared.get("required", {})), _inputs(declared.get("optional", {})))


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(node_env, name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == DISPLAY_NAMES[name]
    declared = node_class.INPUT_TYPES()
    if node_class.OUTPUT_NODE if hasattr(node_class, "OUTPUT_NODE") else False:
        assert declared.get("hidden", PROMPT_HIDDEN) == PROMPT_HIDDEN


def test_every_new_node_is_in_the_table():
    new = set(ops.NODE_CLASS_MAPPINGS) | set(image_nodes.NODE_CLASS_MAPPINGS)
    assert new - {"LoadImage", "SaveImage", "PreviewImage", "ImageScale"} == set(COMFYUI_CONTRACTS)


def test_resize_type_options_default_as_comfyui():
    optional = nodes.NODE_CLASS_MAPPINGS["ResizeImageMaskNode"].INPUT_TYPES()["optional"]
    assert optional["resize_type.crop"][1]["default"] == "center"
    scale_method = nodes.NODE_CLASS_MAPPINGS["ResizeImageMaskNode"].INPUT_TYPES()["required"]["scale_method"]
    assert scale_method[1]["default"] == "area"
    assert nodes.NODE_CLASS_MAPPINGS["PorterDuffImageComposite"].INPUT_TYPES()["required"]["mode"][1]["default"] \
        == "DST"


# -- making, batching, geometry ------------------------------------------------------------------------------------


def _ramp(batch: int = 1, height: int = 4, width: int = 6, channels: int = 3) -> torch.Tensor:
    return torch.arange(batch * height * width * channels, dtype=torch.float32).reshape(
        batch, height, width, channels) / (batch * height * width * channels)


def test_empty_image_is_the_colour():
    (image,) = ops.EmptyImage().generate(width=3, height=2, batch_size=2, color=0xFF8000)
    assert image.shape == (2, 2, 3, 3)
    assert torch.equal(image[1, 1, 2], torch.tensor([1.0, 128 / 255, 0.0]))


def test_image_batch_resizes_the_second_and_pads_a_missing_alpha():
    first, second = _ramp(1, 4, 6), torch.rand(2, 8, 12, 4)
    (batch,) = ops.ImageBatch().batch(first, second)
    assert batch.shape == (3, 4, 6, 4)
    assert torch.equal(batch[0, ..., 3], torch.ones(4, 6))  # image1 got an opaque alpha
    # 8x12 -> 4x6 is the same aspect ratio: bilinear halving averages each 2x2 block
    expected = torch.nn.functional.avg_pool2d(second.movedim(-1, 1), 2).movedim(1, -1)
    assert torch.allclose(batch[1:], expected, atol=1e-6)


def test_batch_images_node_joins_its_inputs_in_order():
    images = {f"images.image{index}": torch.full((1, 2, 2, 3), float(index)) for index in (0, 10, 2, 1)}
    (batch,) = ops.BatchImagesNode().batch(**images, **{"images.image3": None})
    assert batch[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0, 10.0]


def test_image_from_batch_and_repeat_clamp_and_tile():
    images = _ramp(4, 2, 2)
    (taken,) = ops.ImageFromBatch().frombatch(images, batch_index=9, length=5)
    assert torch.equal(taken, images[3:4])  # the index clamps to the last image, the length to what is left
    (taken,) = ops.ImageFromBatch().frombatch(images, batch_index=1, length=2)
    assert torch.equal(taken, images[1:3])
    (repeated,) = ops.RepeatImageBatch().repeat(images[:2], amount=3)
    assert torch.equal(repeated[:, 0, 0, 0], images[[0, 1, 0, 1, 0, 1], 0, 0, 0])


def test_rebatch_images_regroups_a_list_of_batches():
    first, second = torch.zeros(3, 2, 2, 3), torch.ones(2, 2, 2, 3)
    (batches,) = ops.RebatchImages().rebatch([first, second], batch_size=[2])
    assert [batch.shape[0] for batch in batches] == [2, 2, 1]
    assert batches[1][:, 0, 0, 0].tolist() == [0.0, 1.0]


def test_crop_flip_rotate():
    image = _ramp(1, 4, 6)
    (cropped,) = ops.ImageCrop().crop(image, width=3, height=10, x=2, y=1)
    assert torch.equal(cropped, image[:, 1:4, 2:5])
    (cropped,) = ops.ImageCrop().crop(image, width=3, height=3, x=50, y=50)  # clamps to the last pixel
    assert torch.equal(cropped, image[:, 3:, 5:])
    assert torch.equal(ops.ImageFlip().flip(image, "x-axis: vertically")[0], image.flip(1))
    assert torch.equal(ops.ImageFlip().flip(image, "y-axis: horizontally")[0], image.flip(2))
    (rotated,) = ops.ImageRotate().rotate(image, "90 degrees")
    assert rotated.shape == (1, 6, 4, 3)
    # clockwise: the bottom-left pixel becomes the top-left one
    assert torch.equal(rotated[0, 0, 0], image[0, 3, 0]) and torch.equal(rotated[0, 0, 3], image[0, 0, 0])
    assert torch.equal(ops.ImageRotate().rotate(image, "none")[0], image)
    assert torch.equal(ops.ImageRotate().rotate(image, "270 degrees")[0][0, 0, 0], image[0, 0, 5])


def test_stitch_pads_to_align_and_puts_a_spacer_between():
    left, right = torch.zeros(1, 4, 2, 3), torch.full((1, 2, 3, 3), 0.5)
    (stitched,) = ops.ImageStitch().stitch(left, "right", False, spacing_width=1, spacing_color="red", image2=right)
    assert stitched.shape == (1, 4, 2 + 2 + 3, 3)  # spacing 1 is made even
    assert stitched[0, :, 2:4].tolist() == [[[1.0, 0.0, 0.0]] * 2] * 4
    # image2 padded from 2 to 4 rows, one above and one below, with 0 (red is not a grey level)
    assert stitched[0, :, 4, 0].tolist() == [0.0, 0.5, 0.5, 0.0]
    (stitched,) = ops.ImageStitch().stitch(left, "up", False, 0, "white", image2=torch.rand(2, 1, 4, 3))
    assert stitched.shape == (2, 5, 4, 3)  # batch 1 repeated to 2, image2 on top, image1 padded with white
    assert stitched[0, 1:, 0, 0].tolist() == [1.0] * 4 and stitched[0, 1:, 1, 0].tolist() == [0.0] * 4


def test_stitch_matches_sizes_and_passes_through_without_image2():
    image1 = torch.rand(1, 4, 4, 3)
    assert ops.ImageStitch().stitch(image1, "right", True, 0, "white")[0] is image1
    (stitched,) = ops.ImageStitch().stitch(image1, "down", True, 0, "white", image2=torch.rand(1, 2, 8, 4))
    assert stitched.shape == (1, 4 + 1, 4, 4)  # image2 2x8 (aspect 4) to image1's width 4: int(4 / 4) = 1 row
    assert torch.equal(stitched[0, :4, :, 3], torch.ones(4, 4))  # image1 got an opaque alpha


def test_pad_for_outpaint_feathers_like_comfyui():
    image = torch.rand(1, 6, 8, 3)
    padded, mask = ops.ImagePadForOutpaint().expand_image(image, left=2, top=0, right=0, bottom=1, feathering=2)
    assert padded.shape == (1, 7, 10, 3) and mask.shape == (1, 7, 10)
    assert torch.equal(padded[:, :6, 2:], image) and torch.all(padded[:, 6] == 0.5)
    # only the left and bottom sides were padded: d = min(column, 6 - row); v = ((2 - d) / 2)^2 for d < 2
    expected = torch.zeros(6, 8)
    for row in range(6):
        for column in range(8):
            distance = min(column, 6 - row)
            expected[row, column] = ((2 - distance) / 2) ** 2 if distance < 2 else 0.0
    assert torch.equal(mask[0, :6, 2:], expected)
    assert torch.all(mask[0, :, :2] == 1) and torch.all(mask[0, 6] == 1)
    _, unfeathered = ops.ImagePadForOutpaint().expand_image(image, 0, 0, 8, 0, feathering=3)  # 2 * 3 >= 6 rows
    assert torch.all(unfeathered[0, :, :8] == 0)


def test_resize_and_pad_centres_the_scaled_image():
    image = torch.rand(1, 4, 8, 3)
    (fitted,) = ops.ResizeAndPadImage().resize_and_pad(image, 4, 4, "white", "area")
    assert fitted.shape == (1, 4, 4, 3)
    assert torch.all(fitted[:, 0] == 1) and torch.all(fitted[:, 3] == 1)  # scale 0.5: 2 rows, 1 padded above
    assert torch.allclose(fitted[:, 1:3], torch.nn.functional.avg_pool2d(image.movedim(-1, 1), 2).movedim(1, -1))


def test_get_image_size():
    assert ops.GetImageSize().get_size(torch.zeros(3, 5, 7, 3)) == (7, 5, 3)


# -- colour and filters --------------------------------------------------------------------------------------------


def test_invert():
    image = torch.rand(1, 2, 2, 3)
    assert torch.equal(ops.ImageInvert().invert(image)[0], 1.0 - image)


@pytest.mark.parametrize("mode, expected", [
    ("normal", 0.8), ("multiply", 0.2 * 0.8), ("screen", 1 - 0.8 * 0.2), ("overlay", 2 * 0.2 * 0.8),
    ("soft_light", 0.2 + (2 * 0.8 - 1) * (((16 * 0.2 - 12) * 0.2 + 4) * 0.2 - 0.2)), ("difference", 0.0)])
def test_blend_modes_as_comfyui(mode, expected):
    base, layer = torch.full((1, 1, 1, 3), 0.2), torch.full((1, 1, 1, 3), 0.8)
    (blended,) = ops.ImageBlend().blend_images(base, layer, 0.75, mode)
    # difference is base - layer (signed), so 0.25 * 0.2 + 0.75 * -0.6 clamps to 0
    want = max(0.0, 0.25 * 0.2 + 0.75 * expected) if mode != "difference" else 0.0
    assert blended[0, 0, 0, 0].item() == pytest.approx(want, abs=1e-6)


def test_blend_soft_light_dark_branch_and_alpha_fix():
    base, layer = torch.full((1, 1, 1, 4), 0.1), torch.full((1, 1, 1, 3), 0.3)
    (blended,) = ops.ImageBlend().blend_images(layer, base, 1.0, "soft_light")  # image1 3ch, image2's alpha cut
    assert blended.shape == (1, 1, 1, 3)
    assert blended[0, 0, 0, 0].item() == pytest.approx(0.3 - (1 - 0.2) * 0.3 * 0.7, abs=1e-6)
    (blended,) = ops.ImageBlend().blend_images(base, torch.full((1, 1, 1, 3), 0.5), 1.0, "multiply")
    assert blended[0, 0, 0].tolist() == pytest.approx([0.05, 0.05, 0.05, 0.1])  # image2 got an opaque alpha
    with pytest.raises(ValueError, match="image2"):
        ops.ImageBlend().blend_images(torch.rand(2, 2, 2, 3), torch.rand(3, 2, 2, 3), 0.5, "normal")


def _reference_filter(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Plain loops: each pixel the kernel-weighted sum of its neighbours, the image mirrored at the borders."""
    radius = kernel.shape[0] // 2
    height, width = image.shape[1:3]
    out = torch.zeros_like(image)
    for row in range(height):
        for column in range(width):
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    y, x = abs(row + dy), abs(column + dx)
                    y, x = (2 * (height - 1) - y if y >= height else y), (2 * (width - 1) - x if x >= width else x)
                    out[:, row, column] += kernel[dy + radius, dx + radius] * image[:, y, x]
    return out


def test_gaussian_kernel_is_sampled_on_minus_one_to_one():
    kernel = ops.gaussian_kernel(3, 1.0)
    weights = torch.tensor([[math.exp(-(x * x + y * y) / 2) for x in (-1, 0, 1)] for y in (-1, 0, 1)])
    assert torch.allclose(kernel, weights / weights.sum())


def test_blur_and_sharpen_as_comfyui():
    torch.manual_seed(0)
    image = torch.rand(2, 5, 6, 3)
    (blurred,) = ops.ImageBlur().blur(image, blur_radius=2, sigma=0.7)
    assert torch.allclose(blurred, _reference_filter(image, ops.gaussian_kernel(5, 0.7)), atol=1e-5)
    (sharpened,) = ops.ImageSharpen().sharpen(image, sharpen_radius=1, sigma=1.0, alpha=0.5)
    kernel = ops.gaussian_kernel(3, 1.0) * -5.0
    kernel[1, 1] = kernel[1, 1] - kernel.sum() + 1.0  # the weights sum to 1
    assert torch.allclose(sharpened, _reference_filter(image, kernel).clamp(0, 1), atol=1e-5)
    flat = torch.full((1, 4, 4, 3), 0.25)
    assert torch.allclose(ops.ImageSharpen().sharpen(flat, 1, 1.0, 5.0)[0], flat, atol=1e-5)


def test_blur_radius_must_fit_the_image():
    with pytest.raises(ValueError, match="blur_radius"):
        ops.ImageBlur().blur(torch.rand(1, 3, 3, 3), blur_radius=3, sigma=1.0)


def test_bayer_matrix_is_the_normalised_ordered_dither():
    assert ops.bayer_matrix(2).tolist() == [[-0.375, 0.125], [0.375, -0.125]]
    assert sorted(ops.bayer_matrix(4).ravel().tolist()) == [(k - 7.5) / 16 for k in range(16)]


@pytest.mark.parametrize("dither", ["none", "floyd-steinberg", "bayer-4"])
def test_quantize_limits_the_palette(dither):
    torch.manual_seed(1)
    image = torch.rand(1, 8, 8, 4)
    (quantized,) = ops.ImageQuantize().quantize(image, colors=4, dither=dither)
    assert len({tuple(pixel) for pixel in quantized[0, ..., :3].reshape(-1, 3).tolist()}) <= 4
    assert torch.equal(quantized[..., 3], image[..., 3])  # the alpha is kept
    two_colours = torch.zeros(1, 4, 4, 3)
    two_colours[:, :2] = 1.0
    assert torch.equal(ops.ImageQuantize().quantize(two_colours, 2, dither)[0], two_colours)


def _reference_morphology(image: torch.Tensor, size: int, largest: bool) -> torch.Tensor:
    """Plain loops: the max (min) over the size x size window anchored at size // 2, inside the image."""
    height, width = image.shape[1:3]
    out = torch.empty_like(image)
    for row in range(height):
        for column in range(width):
            top, left = max(0, row - size // 2), max(0, column - size // 2)
            window = image[:, top:row - size // 2 + size, left:column - size // 2 + size]
            out[:, row, column] = window.amax(dim=(1, 2)) if largest else window.amin(dim=(1, 2))
    return out


@pytest.mark.parametrize("size", [3, 4])
def test_morphology_matches_flat_kernel_max_min_filters(size):
    torch.manual_seed(2)
    image = torch.rand(1, 5, 7, 3)
    node = ops.Morphology()
    dilated, eroded = _reference_morphology(image, size, True), _reference_morphology(image, size, False)
    assert torch.equal(node.process(image, "dilate", size)[0], dilated)
    assert torch.equal(node.process(image, "erode", size)[0], eroded)
    assert torch.equal(node.process(image, "gradient", size)[0], dilated - eroded)
    opened = _reference_morphology(eroded, size, True)
    closed = _reference_morphology(dilated, size, False)
    assert torch.equal(node.process(image, "open", size)[0], opened)
    assert torch.equal(node.process(image, "close", size)[0], closed)
    assert torch.equal(node.process(image, "top_hat", size)[0], image - opened)
    assert torch.equal(node.process(image, "bottom_hat", size)[0], closed - image)


def test_morphology_of_a_dot():
    dot = torch.zeros(1, 5, 5, 1)
    dot[0, 2, 2] = 1.0
    (dilated,) = ops.Morphology().process(dot, "dilate", 3)
    assert dilated[0, 1:4, 1:4].sum() == 9 and dilated.sum() == 9
    assert ops.Morphology().process(dot, "erode", 3)[0].sum() == 0


# -- alpha compositing ---------------------------------------------------------------------------------------------


def test_join_and_split_alpha_round_trip():
    image, mask = torch.rand(2, 4, 4, 3), torch.rand(3, 2, 2)
    (joined,) = ops.JoinImageWithAlpha().join(image, mask)
    assert joined.shape == (2, 4, 4, 4)  # the shorter batch wins; the mask is resized (bilinear) to the image
    resized = torch.nn.functional.interpolate(mask[:2, None], size=(4, 4), mode="bilinear")[:, 0]
    assert torch.allclose(joined[..., 3], 1 - resized)
    rgb, split_mask = ops.SplitImageWithAlpha().split(joined)
    assert torch.equal(rgb, image) and torch.allclose(split_mask, resized)
    assert torch.equal(ops.SplitImageWithAlpha().split(image)[1], torch.zeros(2, 4, 4))


@pytest.mark.parametrize("mode, colour, alpha", [
    # source colour 0.8 with alpha 0.5, destination 0.4 with alpha 0.25 (premultiplied 0.4 and 0.1)
    ("SRC_OVER", (0.4 + 0.5 * 0.1) / 0.625, 0.5 + 0.5 * 0.25),
    ("DST_OVER", (0.1 + 0.75 * 0.4) / 0.625, 0.25 + 0.75 * 0.5),
    ("SRC_IN", 0.4 * 0.25 / 0.125, 0.125), ("DST_OUT", 0.5 * 0.1 / 0.125, 0.125),
    ("XOR", (0.75 * 0.4 + 0.5 * 0.1) / (0.75 * 0.5 + 0.5 * 0.25), 0.75 * 0.5 + 0.5 * 0.25),
    ("MULTIPLY", 0.04 / 0.125, 0.125), ("ADD", 0.5 / 0.75, 0.75), ("CLEAR", 0.0, 0.0),
    ("DARKEN", (0.75 * 0.4 + 0.5 * 0.1 + 0.1) / 0.625, 0.625),
])
def test_porter_duff_operators(mode, colour, alpha):
    source, destination = torch.full((1, 2, 2, 3), 0.8), torch.full((1, 2, 2, 3), 0.4)
    image, mask = ops.PorterDuffImageComposite().composite(
        source, torch.full((1, 2, 2), 0.5), destination, torch.full((1, 2, 2), 0.75), mode)
    assert image[0, 0, 0, 0].item() == pytest.approx(min(colour, 1.0), abs=1e-6)
    assert mask[0, 0, 0].item() == pytest.approx(1 - alpha, abs=1e-6)


def test_porter_duff_resizes_the_source_and_takes_the_shortest_batch():
    image, mask = ops.PorterDuffImageComposite().composite(
        torch.ones(3, 2, 2, 3), torch.zeros(2, 2), torch.zeros(2, 4, 4, 3), torch.ones(2, 4, 4), "SRC_OVER")
    assert image.shape == (1, 4, 4, 3) and mask.shape == (1, 4, 4)  # a 2-D mask is a batch of one
    assert torch.allclose(image, torch.ones(1, 4, 4, 3)) and torch.allclose(mask, torch.zeros(1, 4, 4))


# -- Resize Image/Mask ---------------------------------------------------------------------------------------------


def _resize(value: torch.Tensor, resize_type: str, method: str = "nearest-exact", **options) -> torch.Tensor:
    named = {f"resize_type.{name}": option for name, option in options.items()}
    return ops.ResizeImageMaskNode().resize(value, resize_type, method, **named)[0]


@pytest.mark.parametrize("resize_type, options, size", [
    ("scale dimensions", {"width": 6, "height": 0}, (3, 6)),
    ("scale dimensions", {"width": 0, "height": 0}, (4, 8)),
    ("scale by multiplier", {"multiplier": 1.5}, (6, 12)),
    ("scale longer dimension", {"longer_size": 4}, (2, 4)),
    ("scale shorter dimension", {"shorter_size": 2}, (2, 4)),
    ("scale width", {"width": 2}, (1, 2)),
    ("scale height", {"height": 8}, (8, 16)),
    ("scale total pixels", {"megapixels": 128 / 1024 / 1024}, (8, 16)),
    ("scale to multiple", {"multiple": 3}, (3, 6)),
])
def test_resize_types_give_comfyuis_sizes(resize_type, options, size):
    image, mask = torch.rand(2, 4, 8, 3), torch.rand(2, 4, 8)
    assert _resize(image, resize_type, **options).shape == (2, *size, 3)
    assert _resize(mask, resize_type, **options).shape == (2, *size)


def test_resize_match_size_and_centre_crop():
    image = _ramp(1, 4, 8)
    (matched,) = ops.ResizeImageMaskNode().resize(image, "match size", "nearest-exact",
                                                  **{"resize_type.match": torch.zeros(4, 4)})
    assert torch.equal(matched, image[:, :, 2:6])  # centre crop (the default) to square, then no scaling


def test_scale_to_multiple_covers_then_crops():
    image = torch.rand(1, 10, 7, 3)
    # targets 9x6: scale 6/7 for the width vs 9/10 for the height -> 9 rows, ceil(7 * 0.9) = 7 columns, crop 6
    expected = ops.resize.upscale(image.movedim(-1, 1), 7, 9, "bilinear", "disabled").movedim(1, -1)[:, :, 0:6]
    assert torch.equal(_resize(image, "scale to multiple", "bilinear", multiple=3), expected)


# -- saving and loading --------------------------------------------------------------------------------------------


def test_save_image_writes_greyscale_for_three_dimensional_tensors(node_env):
    grey = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])
    saved = image_nodes.SaveImage().save_images(grey, "grey")["ui"]["images"]
    opened = Image.open(node_env.folders.output_dir / saved[0]["filename"])
    assert opened.mode == "L" and np.asarray(opened).tolist() == [[0, 127], [255, 63]]
    previewed = image_nodes.PreviewImage().save_images(grey)["ui"]["images"]
    assert Image.open(node_env.folders.temp_dir / previewed[0]["filename"]).mode == "L"


def test_animated_png_has_the_frames_and_comfyuis_comf_chunks(node_env):
    frames = torch.stack([torch.full((4, 4, 3), value) for value in (0.0, 0.5, 1.0)])
    result = image_nodes.SaveAnimatedPNG().save_images(frames, fps=10.0, compress_level=4, filename_prefix="anim/a",
                                                       prompt={"1": {}}, extra_pnginfo={"workflow": {"nodes": []}})
    assert result["ui"]["animated"] == (True,)
    entry = result["ui"]["images"][0]
    assert entry == {"filename": "a_00001_.png", "subfolder": "anim", "type": "output"}
    path = node_env.folders.output_dir / "anim" / "a_00001_.png"
    opened = Image.open(path)
    assert opened.n_frames == 3 and opened.info["duration"] == 100
    opened.seek(2)
    assert np.asarray(opened.convert("RGB"))[0, 0].tolist() == [255, 255, 255]
    data = path.read_bytes()
    assert b"comfprompt\x00" + json.dumps({"1": {}}).encode() in data
    assert b"comfworkflow\x00" + json.dumps({"nodes": []}).encode() in data
    again = image_nodes.SaveAnimatedPNG().save_images(frames, 10.0, 4, "anim/a")
    assert again["ui"]["images"][0]["filename"] == "a_00002_.png"  # never replaces


def test_animated_webp_has_the_frames_and_the_workflow_in_exif(node_env):
    frames = torch.rand(2, 8, 8, 3)
    result = image_nodes.SaveAnimatedWEBP().save_images(frames, 4.0, "w", True, 80, "fastest",
                                                        prompt={"1": {}}, extra_pnginfo={"workflow": {"a": 1}})
    opened = Image.open(node_env.folders.output_dir / result["ui"]["images"][0]["filename"])
    assert opened.format == "WEBP" and opened.n_frames == 2
    exif = opened.getexif()
    assert exif[0x0110] == 'prompt:{"1": {}}' and exif[0x010F] == 'workflow:{"a": 1}'
    assert np.array_equal(np.asarray(opened.convert("RGB")),
                          np.clip(255 * frames[0].numpy(), 0, 255).astype(np.uint8))  # lossless


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        chunks.append((data[position + 4:position + 8], data[position + 8:position + 8 + length]))
        position += 12 + length
    return chunks


def test_save_image_advanced_writes_16_bit_pngs_with_the_workflow(node_env):
    images = torch.tensor([[[[0.0, 0.5, 1.0], [0.25, 2.0, -1.0]]]])  # one 1x2 RGB image
    result = image_nodes.SaveImageAdvanced().save_images(images, "adv", "png", prompt={"1": {}},
                                                         extra_pnginfo={"workflow": {}},
                                                         **{"format.bit_depth": "16-bit"})
    assert result["result"][0] is images
    (entry,) = result["ui"]["images"]
    assert entry == {"filename": "adv_00001_.png", "subfolder": "", "type": "output"}
    chunks = _png_chunks((node_env.folders.output_dir / entry["filename"]).read_bytes())
    assert [kind for kind, _ in chunks] == [b"IHDR", b"tEXt", b"tEXt", b"IDAT", b"IEND"]
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (width, height, depth, colour) == (2, 1, 16, 2)
    assert chunks[1][1] == b'prompt\x00{"1": {}}' and chunks[2][1] == b"workflow\x00{}"
    row = zlib.decompress(chunks[3][1])
    assert row[0] == 0 and list(struct.unpack(">6H", row[1:])) == [0, 32767, 65535, 16383, 65535, 0]  # truncated


def test_save_image_advanced_8_bit_is_save_images_png(node_env):
    images = torch.rand(2, 3, 3, 3)
    saved = image_nodes.SaveImageAdvanced().save_images(images, "eight", "png")["ui"]["images"]
    reference = image_nodes.SaveImage().save_images(images, "ref")["ui"]["images"]
    for ours, theirs in zip(saved, reference):
        assert np.array_equal(np.asarray(Image.open(node_env.folders.output_dir / ours["filename"])),
                              np.asarray(Image.open(node_env.folders.output_dir / theirs["filename"])))
    assert "no EXR encoder" in image_nodes.SaveImageAdvanced.VALIDATE_INPUTS("exr")


def test_load_image_output_reads_annotated_names(node_env):
    Image.new("RGBA", (3, 2), (255, 0, 0, 0)).save(node_env.folders.output_dir / "done.png")
    node_class = image_nodes.LoadImageOutput
    assert "done.png [output]" in node_class.INPUT_TYPES()["required"]["image"][0]
    image, mask = node_class().load_image("done.png [output]")
    assert image.shape == (1, 2, 3, 3) and torch.equal(mask, torch.ones(1, 2, 3))
    assert "not found" in node_class.VALIDATE_INPUTS("missing.png [output]")
    assert "outside" in node_class.VALIDATE_INPUTS("../escape.png [output]")


def test_image_compare_previews_both_sides(node_env):
    result = image_nodes.ImageCompare().compare(image_a=torch.rand(1, 2, 2, 3))
    assert result["ui"]["b_images"] == []
    (entry,) = result["ui"]["a_images"]
    assert entry["type"] == "temp" and entry["filename"].startswith("comfy.compare.a_temp_")
    assert (node_env.folders.temp_dir / entry["filename"]).is_file()


# -- API-format workflows through the engine -----------------------------------------------------------------------


def test_image_workflow_runs_through_the_engine(node_env):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 2, "color": 0x336699}},
        "2": {"class_type": "ImagePadForOutpaint",
              "inputs": {"image": ["1", 0], "left": 8, "top": 0, "right": 0, "bottom": 0, "feathering": 2}},
        "3": {"class_type": "ImageBlur", "inputs": {"image": ["2", 0], "blur_radius": 1, "sigma": 1.0}},
        "4": {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["3", 0], "alpha": ["2", 1]}},
        "5": {"class_type": "ImageStitch", "inputs": {"image1": ["4", 0], "direction": "down",
                                                      "match_image_size": True, "spacing_width": 2,
                                                      "spacing_color": "black", "image2": ["1", 0]}},
        "6": {"class_type": "ImageFlip", "inputs": {"image": ["5", 0], "flip_method": "y-axis: horizontally"}},
        "7": {"class_type": "ResizeImageMaskNode", "inputs": {
            "input": ["6", 0], "resize_type": "scale by multiplier", "resize_type.multiplier": 0.5,
            "scale_method": "area"}},
        "8": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["7", 0], "images.image1": ["1", 0]}},
        "9": {"class_type": "SaveImageAdvanced", "inputs": {"images": ["8", 0], "filename_prefix": "ops",
                                                            "format": "png", "format.bit_depth": "8-bit"}},
    }
    saved = run_workflow(node_env, prompt)
    assert len(saved) == 4 and all(image.size == (12, 11) and image.mode == "RGBA" for image in saved)


def test_postprocessing_and_save_workflow_runs_through_the_engine(node_env):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 3, "color": 0xFF0000}},
        "2": {"class_type": "RebatchImages", "inputs": {"images": ["1", 0], "batch_size": 2}},
        "3": {"class_type": "ImageBlend", "inputs": {"image1": ["2", 0], "image2": ["2", 0], "blend_factor": 0.5,
                                                     "blend_mode": "screen"}},
        "4": {"class_type": "Morphology", "inputs": {"image": ["3", 0], "operation": "open", "kernel_size": 3}},
        "5": {"class_type": "ImageQuantize", "inputs": {"image": ["4", 0], "colors": 8, "dither": "bayer-2"}},
        "6": {"class_type": "SaveAnimatedPNG", "inputs": {"images": ["5", 0], "filename_prefix": "anim", "fps": 8.0,
                                                          "compress_level": 1}},
    }
    saved = run_workflow(node_env, prompt)
    assert len(saved) == 2  # one animation per rebatched list item (pillow merges the identical frames)
    assert all(np.asarray(image.convert("RGB"))[0, 0].tolist() == [255, 0, 0] for image in saved)


def test_bad_widget_values_are_validation_errors(node_env):
    errors = validation_errors({
        "3": {"class_type": "SaveImageAdvanced", "inputs": {"images": ["4", 0], "filename_prefix": "x",
                                                            "format": "avif"}},
        "4": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 40, "sigma": 1.0}},
    })
    assert {error["extra_info"]["input_name"] for node in errors.values() for error in node} >= \
        {"width", "blur_radius", "format"}


def test_a_save_node_fed_a_list_writes_every_item(node_env):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 3, "color": 0xFF0000}},
        "2": {"class_type": "RebatchImages", "inputs": {"images": ["1", 0], "batch_size": 1}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "listed"}},
    }
    saved = run_workflow(node_env, prompt)
    assert sorted(image.filename.rpartition("/")[2] for image in saved) == [
        "listed_00001_.png", "listed_00002_.png", "listed_00003_.png"]


def test_a_rerun_of_a_list_fed_save_replaces_its_files_in_order(node_env):
    from engine.progress import NodeRunContext, bind_node_context

    def run() -> list[str]:
        context = NodeRunContext("7", "prompt-list", None, lambda *args: None)
        with bind_node_context(context):  # one node run, called once per list item
            return [entry["filename"] for images in (torch.zeros(2, 2, 2, 3), torch.ones(1, 2, 2, 3))
                    for entry in image_nodes.SaveImage().save_images(images, "again")["ui"]["images"]]

    first = run()
    assert first == ["again_00001_.png", "again_00002_.png", "again_00003_.png"]
    assert run() == first  # the same prompt run again (after a crash) takes over its own names
    assert len(list(node_env.folders.output_dir.glob("again_*.png"))) == 3
