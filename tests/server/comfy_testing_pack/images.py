"""Image and mask nodes of the execution-suite pack: solid images and masks, a lazy blend, a variadic mean,
and an output node that also has a socket output."""
import torch


class FlatImage:
    """A batch of one-colour images: black, white, or seeded noise (different content, same shape)."""

    DESCRIPTION = "A batch of black, white or noise images."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "content": (["BLACK", "WHITE", "NOISE"], {"tooltip": "what the images hold"}),
            "height": ("INT", {"default": 32, "min": 1, "max": 1024}),
            "width": ("INT", {"default": 32, "min": 1, "max": 1024}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 8}),
        }}

    def make(self, content, height=32, width=32, batch_size=1):  # defaults for expansions, which skip validation
        shape = (batch_size, height, width, 3)
        if content == "NOISE":
            return (torch.rand(shape, generator=torch.Generator().manual_seed(height * width)),)
        return (torch.full(shape, 1.0 if content == "WHITE" else 0.0),)


class FlatMask:
    """A batch of masks filled with one value (a FLOAT widget, so a list of floats maps over it)."""

    DESCRIPTION = "A batch of masks filled with one value."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "value": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0}),
            "height": ("INT", {"default": 32, "min": 1, "max": 1024}),
            "width": ("INT", {"default": 32, "min": 1, "max": 1024}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 8}),
        }}

    def make(self, value, height=32, width=32, batch_size=1):
        return (torch.full((batch_size, height, width), float(value)),)


class LazyBlend:
    """`first` where the mask is 0, `second` where it is 1; asks only for the images the mask needs."""

    DESCRIPTION = "Blends two images by a mask, evaluating only the images the mask uses."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"first": ("IMAGE", {"lazy": True}), "second": ("IMAGE", {"lazy": True}),
                             "mask": ("MASK",)}}

    def check_lazy_status(self, mask, first=None, second=None):
        wanted = []
        if first is None and bool((mask < 1.0).any()):
            wanted.append("first")
        if second is None and bool((mask > 0.0).any()):
            wanted.append("second")
        return wanted

    def blend(self, mask, first=None, second=None):
        if not bool((mask > 0.0).any()):
            return (first,)
        if not bool((mask < 1.0).any()):
            return (second,)
        if first.shape != second.shape:
            raise ValueError(f"LazyBlend: images of shapes {tuple(first.shape)} and {tuple(second.shape)} differ")
        weight = mask.reshape(mask.shape[0], mask.shape[-2], mask.shape[-1], 1)
        return (first * (1.0 - weight) + second * weight,)


class MeanOfImages:
    """The mean of `image1` and any further `image2`, `image3`, ... inputs the prompt gives (undeclared)."""

    DESCRIPTION = "Averages any number of images given as image1, image2, ..."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mean"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",)}}

    def mean(self, image1, **more):
        images = [image1] + [more[f"image{n}"] for n in range(2, len(more) + 2) if f"image{n}" in more]
        return (torch.stack(images).mean(dim=0),)


class ScaleAndShow:
    """An output node with a socket output: the image times `factor`, passed on."""

    DESCRIPTION = "Scales an image; an output node that also passes the result on."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "scale"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0})}}

    def scale(self, image, factor):
        return (image * factor,)


NODES = {"FlatImage": FlatImage, "FlatMask": FlatMask, "LazyBlend": LazyBlend, "MeanOfImages": MeanOfImages,
         "ScaleAndShow": ScaleAndShow}
