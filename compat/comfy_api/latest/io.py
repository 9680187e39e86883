"""ComfyUI's V3 node schema (`from comfy_api.latest import io`): a node is an `io.ComfyNode` subclass whose
`define_schema()` returns an `io.Schema` of typed inputs and outputs and whose classmethod `execute` (sync or async)
returns an `io.NodeOutput`.

The engine knows the classic node contract only, so a ComfyNode class answers it, derived from its schema as
ComfyUI's own server derives its V1 info: INPUT_TYPES, RETURN_TYPES, RETURN_NAMES, OUTPUT_IS_LIST, OUTPUT_NODE,
INPUT_IS_LIST, CATEGORY, DESCRIPTION, FUNCTION, VALIDATE_INPUTS, IS_CHANGED and check_lazy_status. During `execute`
the node's hidden values are on `cls.hidden` (a per-call subclass, so concurrent runs do not share them).

ComfyUI's dynamic inputs keep its prompt shape: a `DynamicCombo` "mode" sends "mode" (the chosen key) and
"mode.<input>" for the chosen option's inputs, an `Autogrow` "values" sends "values.<name>" per connected socket;
the engine validates them through `LIVE_INPUT_TYPES` and `execute` gets them nested as ComfyUI passes them
(`mode={"mode": key, "<input>": value}`, `values={"<name>": value}`). A `MatchType` socket takes any of its
template's types, and so does what its output feeds.
"""
from __future__ import annotations

import copy
import enum
import inspect
from dataclasses import dataclass, field
from typing import Any

from comfy_execution.graph import ExecutionBlocker

from engine.input_spec import types_compatible


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

    @property
    def section(self) -> str:
        return "optional" if self.optional else "required"

    def expand(self, live: LiveInputs, prefix: tuple[str, ...]) -> None:
        """Add this socket's prompt inputs for one node's values (`live.values`) under `prefix` (the dynamic
        inputs it sits in)."""
        name = ".".join((*prefix, self.id))
        live.types[self.section][name] = self.as_v1()
        if prefix:
            live.paths[name] = name


@dataclass
class LiveInputs:
    """One prompt node's inputs of a V3 node: `types` its INPUT_TYPES for those values, `paths` where a dotted
    prompt input goes in `execute`'s nested arguments, `empty` the dynamic inputs with no value (passed as {})."""

    values: dict[str, Any]
    types: dict[str, dict[str, Any]] = field(default_factory=lambda: {"required": {}, "optional": {}})
    paths: dict[str, str] = field(default_factory=dict)
    empty: set[str] = field(default_factory=set)

    def value(self, name: str) -> Any:
        value = self.values.get(name)
        return value[0] if isinstance(value, list) and len(value) == 1 else value  # INPUT_IS_LIST nodes get lists

    def nest(self) -> dict[str, Any]:
        """The values with every dotted input moved to its place in a nested dict, as ComfyUI's execute gets them."""
        values, nested = dict(self.values), {}
        for name, path in self.paths.items():
            value = {} if name in self.empty else values.pop(name, None)
            *parents, leaf = path.split(".")
            place = nested
            for part in parents:
                place = place.setdefault(part, {})
            place[leaf] = value
        values.update(nested)
        return values


class Output:
    def __init__(self, id: str | None = None, io_type: str = "*", display_name: str | None = None,
                 tooltip: str | None = None, is_output_list: bool = False) -> None:
        self.id, self.io_type, self.display_name = id, io_type, display_name
        self.tooltip, self.is_output_list = tooltip, is_output_list
        self.template: MatchType.Template | None = None


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
LatentUpscaleModel = _type("LatentUpscaleModel", "LATENT_UPSCALE_MODEL")
ModelPatch = _type("ModelPatch", "MODEL_PATCH")
Audio = _type("Audio", "AUDIO")
Video = _type("Video", "VIDEO")
Tracks = _type("Tracks", "TRACKS")
BBOX = _type("BBOX", "BBOX")
SEGS = _type("SEGS", "SEGS")
Dict = _type("Dict", "DICT")
Array = _type("Array", "ARRAY")
AnyType = _type("AnyType", "*")


class BoundingBox(ComfyType):
    """A box {x, y, width, height}: a widget on the node (default 512x512 at the origin) or a socket."""

    io_type = "BOUNDING_BOX"

    @classmethod
    def Input(cls, id: str, default: dict[str, int] | None = None, socketless: bool = True,
              **options: Any) -> Input:
        return Input(id, cls.io_type, default=default or {"x": 0, "y": 0, "width": 512, "height": 512},
                     socketless=socketless, **options)


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


class MatchedType(str):
    """The type of a MatchType socket: "COMFY_MATCHTYPE_V3" in the catalogue (as ComfyUI's), connecting to any of its
    template's allowed types, so a MatchType output feeds what its input took (`types_compatible` asks its `!=`)."""

    allowed: str

    def __new__(cls, allowed: str) -> MatchedType:
        name = super().__new__(cls, "COMFY_MATCHTYPE_V3")
        name.allowed = allowed
        return name

    def __ne__(self, other: object) -> bool:
        other_types = other.allowed if isinstance(other, MatchedType) else str(other)
        return not types_compatible(str(self.allowed), other_types)

    __hash__ = str.__hash__


class MatchType:
    """Sockets whose type is whichever of the template's types is connected (ComfyUI's generic in/out)."""

    io_type = "COMFY_MATCHTYPE_V3"

    class Template:
        def __init__(self, template_id: str, allowed_types: Any = None) -> None:
            allowed = AnyType if allowed_types is None else allowed_types
            self.template_id = template_id
            self.allowed_types = list(allowed) if isinstance(allowed, (list, tuple)) else [allowed]

        def as_dict(self) -> dict[str, str]:
            return {"template_id": self.template_id,
                    "allowed_types": ",".join(kind.io_type for kind in self.allowed_types)}

        def socket_type(self) -> MatchedType:
            return MatchedType(self.as_dict()["allowed_types"])

    @staticmethod
    def Input(id: str, template: MatchType.Template, **options: Any) -> Input:
        return Input(id, template.socket_type(), extra_dict={"template": template.as_dict()}, **options)

    @staticmethod
    def Output(template: MatchType.Template, id: str | None = None, display_name: str | None = None,
               tooltip: str | None = None, is_output_list: bool = False) -> Output:
        output = Output(id, template.socket_type(), display_name or (None if id else "MATCHTYPE"), tooltip,
                        is_output_list)
        output.template = template
        return output


def _inputs_v1(sockets: list[Input]) -> dict[str, dict[str, Any]]:
    """Sockets as a V1 INPUT_TYPES dict (the shape ComfyUI's dynamic inputs describe their own sockets in)."""
    types: dict[str, dict[str, Any]] = {"required": {}}
    for socket in sockets:
        types.setdefault(socket.section, {})[socket.id] = socket.as_v1()
    return types


class DynamicCombo:
    """A choice whose options bring their own inputs: "mode" holds the chosen key and "mode.<input>" the chosen
    option's inputs; `execute` gets `mode={"mode": key, "<input>": value, ...}`."""

    io_type = "COMFY_DYNAMICCOMBO_V3"

    class Option:
        def __init__(self, key: str, inputs: list[Input]) -> None:
            self.key, self.inputs = key, list(inputs)

    class Input(Input):
        def __init__(self, id: str, options: list[DynamicCombo.Option], **settings: Any) -> None:
            super().__init__(id, "COMFY_DYNAMICCOMBO_V3", **settings)
            self.choices = list(options)

        def as_v1(self) -> tuple[Any, dict[str, Any]]:
            io_type, options = super().as_v1()
            options["options"] = [{"key": option.key, "inputs": _inputs_v1(option.inputs)} for option in self.choices]
            return io_type, options

        def expand(self, live: LiveInputs, prefix: tuple[str, ...]) -> None:
            name = ".".join((*prefix, self.id))
            _, options = super().as_v1()
            live.types[self.section][name] = ([option.key for option in self.choices], options)
            chosen = next((option for option in self.choices if option.key == live.value(name)), None)
            if chosen is None:
                return  # validation names the unknown key
            live.paths[name] = f"{name}.{self.id}"
            for socket in chosen.inputs:
                socket.expand(live, (*prefix, self.id))


class Autogrow:
    """A growing list of sockets made from one template: "values.<name>" per socket; `execute` gets
    `values={"<name>": value}` for the connected ones ({} when none is)."""

    io_type = "COMFY_AUTOGROW_V3"

    class _Template:
        def __init__(self, input: Input, names: list[str], min: int) -> None:
            if min < 0:
                raise ValueError(f"Autogrow template {input.id!r}: min must be 0 or more, not {min}")
            self.input, self.names, self.min = copy.copy(input), names, min
            self.input.options = {**input.options, "forceInput": True} if _is_widget(input) \
                else dict(input.options)

        def as_dict(self) -> dict[str, Any]:
            return {"input": _inputs_v1([self.input]), "min": self.min}

    class TemplatePrefix(_Template):
        def __init__(self, input: Input, prefix: str, min: int = 1, max: int = 10) -> None:
            if not 1 <= max <= 100:
                raise ValueError(f"Autogrow template {input.id!r}: max must be 1 to 100, not {max}")
            super().__init__(input, [f"{prefix}{index}" for index in range(max)], min)
            self.prefix, self.max = prefix, max

        def as_dict(self) -> dict[str, Any]:
            return {**super().as_dict(), "prefix": self.prefix, "max": self.max}

    class TemplateNames(_Template):
        def __init__(self, input: Input, names: list[str], min: int = 1) -> None:
            super().__init__(input, list(names)[:100], min)

        def as_dict(self) -> dict[str, Any]:
            return {**super().as_dict(), "names": self.names}

    class Input(Input):
        def __init__(self, id: str, template: Autogrow._Template, **settings: Any) -> None:
            super().__init__(id, "COMFY_AUTOGROW_V3", **settings)
            self.template = template

        def as_v1(self) -> tuple[Any, dict[str, Any]]:
            io_type, options = super().as_v1()
            return io_type, {**options, "template": self.template.as_dict()}

        def expand(self, live: LiveInputs, prefix: tuple[str, ...]) -> None:
            socket, any_given = self.template.input, False
            for index, member in enumerate(self.template.names):
                name = ".".join((*prefix, self.id, member))
                required = index < self.template.min and not socket.optional
                live.types["required" if required else "optional"][name] = socket.as_v1()
                if name in live.values:
                    live.paths[name], any_given = name, True
            if not any_given:
                group = ".".join((*prefix, self.id))
                live.paths[group] = group
                live.empty.add(group)


def _is_widget(socket: Input) -> bool:
    return isinstance(socket.io_type, list) or socket.io_type in {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


class FolderType(str, enum.Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, enum.Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


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
    def OUTPUT_MATCHTYPES(cls) -> tuple | None:
        """Each output's MatchType template id (None for the others); None when there is none, as ComfyUI's."""
        ids = tuple(output.template.template_id if output.template else None for output in cls.GET_SCHEMA().outputs)
        return ids if any(ids) else None

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
    def live_inputs(cls, values: dict[str, Any]) -> LiveInputs:
        live = LiveInputs(values)
        for socket in cls.GET_SCHEMA().inputs:
            socket.expand(live, ())
        return live

    @classmethod
    def LIVE_INPUT_TYPES(cls, values: dict[str, Any]) -> dict[str, Any]:
        """INPUT_TYPES for one prompt node's values: its dynamic inputs expanded to the sockets those values
        choose (the engine's hook for inputs that depend on values)."""
        types = cls.live_inputs(values).types
        hidden = cls.INPUT_TYPES().get("hidden")
        return {**types, "hidden": hidden} if hidden else types

    @classmethod
    def _hidden_clone(cls, values: dict[str, Any]) -> type:
        """A subclass holding this call's hidden values on `hidden`, so concurrent runs do not share them."""
        holder = HiddenHolder(**{kind.name: values.pop(kind.name, None) for kind in Hidden})
        return type(cls.__name__, (cls,), {"hidden": holder})

    def run(self, **inputs: Any) -> Any:
        clone = type(self)._hidden_clone(inputs)
        return _as_v1(clone.execute(**clone.live_inputs(inputs).nest()), len(type(self).RETURN_TYPES))

    async def run_async(self, **inputs: Any) -> Any:
        clone = type(self)._hidden_clone(inputs)
        return _as_v1(await clone.execute(**clone.live_inputs(inputs).nest()), len(type(self).RETURN_TYPES))


def _as_v1(returned: Any, output_count: int) -> Any:
    if isinstance(returned, NodeOutput):
        return returned.as_v1(output_count)
    return returned


__all__ = ["ComfyNode", "Schema", "NodeOutput", "Input", "Output", "Hidden", "NumberDisplay", "Boolean", "Int",
           "Float", "String", "Combo", "Image", "Mask", "Latent", "Conditioning", "Sampler", "Sigmas", "Noise",
           "Guider", "Clip", "ClipVision", "ClipVisionOutput", "ControlNet", "Vae", "Model", "StyleModel", "Gligen",
           "UpscaleModel", "LoraModel", "LossMap", "LatentUpscaleModel", "ModelPatch", "Audio", "Video", "Tracks",
           "BBOX", "SEGS", "Dict", "Array", "BoundingBox", "AnyType", "Custom", "MultiType", "MatchType",
           "DynamicCombo", "Autogrow", "FolderType", "UploadType", "LiveInputs"]
