"""Constants, validation and IS_CHANGED nodes of the execution-suite pack."""
import torch

UNION = "IMAGE,FLOAT"


def _product_image(first, second):
    """first * second, where either is an IMAGE or a float (two floats make a 32x32 image of their product)."""
    if isinstance(first, float) and isinstance(second, float):
        return torch.ones((1, 32, 32, 3)) * first * second
    return first * second


def _not_image_or_float(**values) -> str | None:
    """The first given value that is neither an image nor a float, described; None if all are fine."""
    for name, value in values.items():
        if value is not None and not isinstance(value, (torch.Tensor, float)):
            return f"{name} must be an image or a float, got {type(value).__name__}"
    return None


class IntValue:
    DESCRIPTION = "An INT constant as an output."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("INT",)
    FUNCTION = "give"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -1000, "max": 1000})}}

    def give(self, value):
        return (value,)


class FloatValue:
    DESCRIPTION = "A FLOAT constant as an output."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "give"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("FLOAT", {"default": 0.0, "min": -1000.0, "max": 1000.0})}}

    def give(self, value):
        return (value,)


class ProductChecked:
    """Union inputs checked by VALIDATE_INPUTS with defaults: constants must be floats, links are type-checked
    by the engine (and arrive as None)."""

    DESCRIPTION = "Multiplies two images or floats; rejects other constants."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "multiply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"first": (UNION,), "second": (UNION,)}}

    @classmethod
    def VALIDATE_INPUTS(cls, first=None, second=None):
        return _not_image_or_float(first=first, second=second) or True

    def multiply(self, first, second):
        return (_product_image(first, second),)


class ProductCheckedWithTypes(ProductChecked):
    """As ProductChecked, but it checks the linked types itself (`input_types`): only IMAGE or FLOAT links."""

    DESCRIPTION = "Multiplies two images or floats; checks the types of its links itself."

    @classmethod
    def VALIDATE_INPUTS(cls, input_types, first=None, second=None):
        wrong = {name: kind for name, kind in input_types.items() if kind not in ("IMAGE", "FLOAT")}
        if wrong:
            return f"links of the wrong type: {wrong}"
        return _not_image_or_float(first=first, second=second) or True


class ProductCheckedRequired(ProductChecked):
    """As ProductChecked, but VALIDATE_INPUTS has no defaults: a linked input must still reach it (as None)."""

    DESCRIPTION = "Multiplies two images or floats; VALIDATE_INPUTS without defaults."

    @classmethod
    def VALIDATE_INPUTS(cls, first, second):
        return _not_image_or_float(first=first, second=second) or True


class ProductNoSevens:
    """Two FLOATs in 0..1, checked by a VALIDATE_INPUTS taking **kwargs: the node checks every input itself,
    so out-of-range values pass, and it refuses 7.0."""

    DESCRIPTION = "Multiplies two floats; refuses a 7.0."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "multiply"

    @classmethod
    def INPUT_TYPES(cls):
        unit = ("FLOAT", {"min": 0.0, "max": 1.0})
        return {"required": {"first": unit, "second": unit}}

    @classmethod
    def VALIDATE_INPUTS(cls, **values):
        return "no sevens" if 7.0 in values.values() else True

    def multiply(self, first, second):
        return (_product_image(first, second),)


class PassMaybeRerun:
    """Passes its image on; IS_CHANGED says "changed" on every run (NaN) while `always_rerun` is on."""

    DESCRIPTION = "Passes an image on; reruns every time while always_rerun is on."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "pass_on"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}, "optional": {"always_rerun": ("BOOLEAN", {"default": False})}}

    @classmethod
    def IS_CHANGED(cls, always_rerun=False, **_):
        return float("nan") if always_rerun else False

    def pass_on(self, image, always_rerun=False):
        return (image,)


class ScaleByConstant:
    """The image times `factor`. IS_CHANGED sees only constants: the linked image arrives as None, and one that
    did not would make the node rerun every time (its token would depend on the image)."""

    DESCRIPTION = "Scales an image by a constant factor."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "scale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0})}}

    @classmethod
    def IS_CHANGED(cls, image, factor):
        return factor if image is None else float("nan")

    def scale(self, image, factor):
        return (image * factor,)


NODES = {"IntValue": IntValue, "FloatValue": FloatValue, "ProductChecked": ProductChecked,
         "ProductCheckedWithTypes": ProductCheckedWithTypes, "ProductCheckedRequired": ProductCheckedRequired,
         "ProductNoSevens": ProductNoSevens, "PassMaybeRerun": PassMaybeRerun, "ScaleByConstant": ScaleByConstant}
