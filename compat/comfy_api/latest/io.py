"""ComfyUI's V3 node schema (`from comfy_api.latest import io`): a node is an `io.ComfyNode` subclass whose
`define_schema()` returns an `io.Schema` of typed inputs and outputs and whose classmethod `execute` (sync or async)
returns an `io.NodeOutput`.

The engine knows the classic node contract only, so a ComfyNode class answers it, derived from its schema as
ComfyUI's own server derives its V1 info: INPUT_TYPES, RETURN_TYPES, RETURN_NAMES, OUTPUT_IS_LIST, OUTPUT_NODE,
INPUT_IS_LIST, CATEGORY, DESCRIPTION, FUNCTION, VALIDATE_INPUTS, IS_CHANGED and check_lazy_status. During `execute`
the node's hidden values are on `cls.hidden` (a per-call subclass, so concurrent runs do not share them).
"""
from __future__ import annotations

import enum
import inspect
from dataclasses import dataclass, field
from typing import Any

from comfy_execution.graph import ExecutionBlocker


class NumberDisplay(str, enum.Enum):
    number = "number"
    slider = "slider"


class Input:
    """One input socket or widget of a schema."""

    def __init__(self, id: str, io_type: str, display_name: str | None = None, optional: bool = False,
                 tooltip: str | None = None, lazy: bool | None = None, extra_dict: dict[str, Any] | None = None,
                 raw_link: bool | None = None, advanced: bool | None = None, **options: Any) -> None:
        self.id, self.io_type, self.optional = id, io_type, optional
        self.options = {"display_name": display_name, "tooltip": tooltip, "lazy": lazy, "rawLink": raw_link,
                        "advanced": advanced, **(extra_dict or {})}
        for name, value in options.items():
            self.options[_V1_OPTION_NAMES.get(name, name)] = value.value if isinstance(value, enum.Enum) else value

    def as_v1(self) -> tuple[Any, dict[str, Any]]:
        return self.io_type, {name: value for name, value in self.options.items() if value is not None}


class Output:
    def __init__(self, id: str | None = None, io_type: str = "*", display_name: str | None = None,
                 tooltip: str | None = None, is_output_list: bool = False) -> None:
        self.id, self.io_type, self.display_name = id, io_type, display_name
        self.tooltip, self.is_output_list = tooltip, is_output_list


# V3 option names that ComfyUI's V1 info spells otherwise
_V1_OPTION_NAMES = {"force_input": "forceInput", "display_mode": "display", "default_input": "defaultInput",
                    "dynamic_prompts": "dynamicPrompts", "image_folder": "image_folder"}


class ComfyType:
    """A socket type: `X.Input(id, ...)` and `X.Output(...)` make its sockets."""

    io_type = "*"

    @classmethod
    def Input(cls, id: str, **options: Any) -> Input:
        return Input(id, cls.io_type, **options)

    @classmethod
    def Output(cls, id: str | None = None, **options: Any) -> Output:
        return Output(id, cls.io_type, **options)


def _type(name: str, io_type: str) -> type[ComfyType]:
    return type(name, (ComfyType,), {"io_type": io_type, "__doc__": f"The {io_type} socket type."})


Boolean = _type("Boolean", "BOOLEAN")
Int = _type("Int", "INT")
Float = _type("Float", "FLOAT")
String = _type("String", "STRING")
Image = _type("Image", "IMAGE")
Mask = _type("Mask", "MASK")
Latent = _type("Latent", "LATENT")
Conditioning = _type("Conditioning", "CONDITIONING")
Sampler = _type("Sampler", "SAMPLER")
Sigmas = _type("Sigmas", "SIGMAS")
Noise = _type("Noise", "NOISE")
Guider = _type("Guider", "GUIDER")
Clip = _type("Clip", "CLIP")
ClipVision = _type("ClipVision", "CLIP_VISION")
ClipVisionOutput = _type("ClipVisionOutput", "CLIP_VISION_OUTPUT")
ControlNet = _type("ControlNet", "CONTROL_NET")
Vae = _type("Vae", "VAE")
Model = _type("Model", "MODEL")
StyleModel = _type("StyleModel", "STYLE_MODEL")
Gligen = _type("Gligen", "GLIGEN")
UpscaleModel = _type("UpscaleModel", "UPSCALE_MODEL")
LoraModel = _type("LoraModel", "LORA_MODEL")
LossMap = _type("LossMap", "LOSS_MAP")
AnyType = _type("AnyType", "*")


class Combo(ComfyType):
    """A choice among `options` (the V1 spec's list in place of a type name)."""

    io_type = "COMBO"

    @classmethod
    def Input(cls, id: str, options: list[Any] | type[enum.Enum] | None = None, **settings: Any) -> Input:
        if isinstance(options, type) and issubclass(options, enum.Enum):
            options = [member.value for member in options]
        socket = Input(id, "COMBO", **settings)
        socket.io_type = list(options or [])
        return socket


def Custom(io_type: str) -> type[ComfyType]:
    """A socket type of the pack's own (`io.Custom("MY_TYPE")`)."""
    return _type(f"Custom_{io_type}", io_type)


class MultiType:
    """An input accepting several types (ComfyUI's comma-joined union)."""

    @staticmethod
    def Input(socket: Input | str, types: list[type[ComfyType]], **options: Any) -> Input:
        socket_id = socket.id if isinstance(socket, Input) else socket
        return Input(socket_id, ",".join(kind.io_type for kind in types), **options)


class Hidden(str, enum.Enum):
    """Hidden values a node may ask for; the executor fills them."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"


@dataclass
class HiddenHolder:
    unique_id: str | None = None
    prompt: Any = None
    extra_pnginfo: Any = None
    dynprompt: Any = None


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    not_idempotent: bool = False
    search_aliases: list[str] = field(default_factory=list)


class NodeOutput:
    """What `execute` returns: the output values, and optionally `ui` (shown in the browser and history),
    `expand` (a subgraph to run instead, from GraphBuilder) or `block_execution` (a message: every output blocks
    what depends on it)."""

    def __init__(self, *values: Any, ui: Any = None, expand: dict | None = None,
                 block_execution: str | None = None) -> None:
        self.values, self.ui, self.expand, self.block_execution = values, ui, expand, block_execution

    def as_v1(self, output_count: int) -> Any:
        values = self.values
        if self.block_execution is not None:
            values = tuple(ExecutionBlocker(self.block_execution) for _ in range(output_count))
        ui = self.ui.as_dict() if hasattr(self.ui, "as_dict") else self.ui
        if ui is None and self.expand is None:
            return tuple(values)
        result: dict[str, Any] = {"result": tuple(values)}
        if ui is not None:
            result["ui"] = ui
        if self.expand is not None:
            result["expand"] = self.expand
        return result


class _ComfyNodeMeta(type):
    """The classic contract's class attributes, read from the schema when asked."""

    @property
    def RETURN_TYPES(cls) -> tuple:
        return tuple(output.io_type for output in cls.GET_SCHEMA().outputs)

    @property
    def RETURN_NAMES(cls) -> tuple:
        return tuple(output.display_name or output.id or output.io_type for output in cls.GET_SCHEMA().outputs)

    @property
    def OUTPUT_IS_LIST(cls) -> tuple:
        return tuple(output.is_output_list for output in cls.GET_SCHEMA().outputs)

    @property
    def OUTPUT_TOOLTIPS(cls) -> tuple:
        return tuple(output.tooltip for output in cls.GET_SCHEMA().outputs)

    @property
    def OUTPUT_NODE(cls) -> bool:
        return cls.GET_SCHEMA().is_output_node

    @property
    def INPUT_IS_LIST(cls) -> bool:
        return cls.GET_SCHEMA().is_input_list

    @property
    def NOT_IDEMPOTENT(cls) -> bool:
        return cls.GET_SCHEMA().not_idempotent

    @property
    def CATEGORY(cls) -> str:
        return cls.GET_SCHEMA().category

    @property
    def DESCRIPTION(cls) -> str:
        return cls.GET_SCHEMA().description

    @property
    def DEPRECATED(cls) -> bool:
        return cls.GET_SCHEMA().is_deprecated

    @property
    def EXPERIMENTAL(cls) -> bool:
        return cls.GET_SCHEMA().is_experimental

    @property
    def FUNCTION(cls) -> str:
        return "run_async" if inspect.iscoroutinefunction(cls.execute) else "run"


class ComfyNode(metaclass=_ComfyNodeMeta):
    """Base class of V3 nodes: override `define_schema` and `execute` (classmethods)."""

    hidden = HiddenHolder()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A V3 class's optional classmethods under the classic names the engine reads (`check_lazy_status` keeps
        its name: a classmethod answers calls on instances too)."""
        super().__init_subclass__(**kwargs)
        if "validate_inputs" in cls.__dict__:
            cls.VALIDATE_INPUTS = cls.__dict__["validate_inputs"]
        if "fingerprint_inputs" in cls.__dict__:
            cls.IS_CHANGED = cls.__dict__["fingerprint_inputs"]

    @classmethod
    def define_schema(cls) -> Schema:
        raise TypeError(f"{cls.__name__}: a ComfyNode must define define_schema()")

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise TypeError(f"{cls.__name__}: a ComfyNode must define execute()")

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        return cls.define_schema()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        schema = cls.GET_SCHEMA()
        types: dict[str, Any] = {"required": {}, "optional": {}}
        for socket in schema.inputs:
            types["optional" if socket.optional else "required"][socket.id] = socket.as_v1()
        if schema.hidden:
            types["hidden"] = {Hidden(kind).name: Hidden(kind).value for kind in schema.hidden}
        return types

    @classmethod
    def _hidden_clone(cls, values: dict[str, Any]) -> type:
        """A subclass holding this call's hidden values on `hidden`, so concurrent runs do not share them."""
        holder = HiddenHolder(**{kind.name: values.pop(kind.name, None) for kind in Hidden})
        return type(cls.__name__, (cls,), {"hidden": holder})

    def run(self, **inputs: Any) -> Any:
        clone = type(self)._hidden_clone(inputs)
        return _as_v1(clone.execute(**inputs), len(type(self).RETURN_TYPES))

    async def run_async(self, **inputs: Any) -> Any:
        clone = type(self)._hidden_clone(inputs)
        return _as_v1(await clone.execute(**inputs), len(type(self).RETURN_TYPES))


def _as_v1(returned: Any, output_count: int) -> Any:
    if isinstance(returned, NodeOutput):
        return returned.as_v1(output_count)
    return returned


__all__ = ["ComfyNode", "Schema", "NodeOutput", "Input", "Output", "Hidden", "NumberDisplay", "Boolean", "Int",
           "Float", "String", "Combo", "Image", "Mask", "Latent", "Conditioning", "Sampler", "Sigmas", "Noise",
           "Guider", "Clip", "ClipVision", "ClipVisionOutput", "ControlNet", "Vae", "Model", "StyleModel", "Gligen",
           "UpscaleModel", "LoraModel", "LossMap", "AnyType", "Custom", "MultiType"]
