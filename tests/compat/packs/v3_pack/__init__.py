"""A node pack written against ComfyUI's V3 API (`comfy_api.latest`), loaded through `comfy_entrypoint`."""

from comfy_api.latest import ComfyAPI, ComfyAPISync, ComfyExtension, io, ui
from comfy_execution.graph_utils import GraphBuilder

api, api_sync = ComfyAPI(), ComfyAPISync()


class V3Add(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Add", display_name="Add (V3)", category="v3/math", description="Adds two integers.",
            inputs=[io.Int.Input("a", default=1, min=0, max=10, tooltip="The first."),
                    io.Int.Input("b", default=2, min=0, max=10, optional=True, display_mode=io.NumberDisplay.slider)],
            outputs=[io.Int.Output(display_name="sum")],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, a, b=0):
        return io.NodeOutput(a + b, ui=ui.PreviewText(f"{cls.hidden.unique_id}:{a + b}"))


class V3Pick(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Pick", category="v3/flow",
                         inputs=[io.Boolean.Input("first"), io.Int.Input("when_true", lazy=True),
                                 io.Int.Input("when_false", lazy=True)],
                         outputs=[io.Int.Output()])

    @classmethod
    def check_lazy_status(cls, first, when_true=None, when_false=None):
        return ["when_true"] if first else ["when_false"]

    @classmethod
    def execute(cls, first, when_true=None, when_false=None):
        return io.NodeOutput(when_true if first else when_false)


class V3Even(io.ComfyNode):
    calls = []

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Even", category="v3/math", inputs=[io.Int.Input("x")],
                         outputs=[io.Int.Output()])

    @classmethod
    def validate_inputs(cls, x):
        return True if x is None or x % 2 == 0 else f"x must be even, not {x}"

    @classmethod
    def fingerprint_inputs(cls, x):
        return x

    @classmethod
    def execute(cls, x):
        cls.calls.append(x)
        return io.NodeOutput(x)


class V3Range(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Range", category="v3/lists", inputs=[io.Int.Input("count", default=3)],
                         outputs=[io.Int.Output(is_output_list=True)])

    @classmethod
    def execute(cls, count):
        return io.NodeOutput(list(range(count)))


class V3Darken(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Darken", category="v3/image", is_output_node=True,
                         inputs=[io.Image.Input("image"), io.Float.Input("factor", default=0.5, min=0.0, max=1.0),
                                 io.Combo.Input("mode", options=["multiply", "keep"])],
                         outputs=[io.Image.Output()], hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo])

    @classmethod
    async def execute(cls, image, factor, mode):
        await api.execution.set_progress(1, 2)
        darker = image * factor if mode == "multiply" else image
        api_sync.execution.set_progress(2, 2, preview_image=darker)
        return io.NodeOutput(darker, ui=ui.PreviewImage(darker, cls=cls))


class V3Triple(io.ComfyNode):
    """Expands into two V3Add nodes: x + x + x."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Triple", category="v3/math", inputs=[io.Int.Input("x", default=1, max=10)],
                         outputs=[io.Int.Output()], hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, x):
        graph = GraphBuilder()
        double = graph.node("V3Add", a=x, b=x)
        triple = graph.node("V3Add", a=double.out(0), b=x)
        return io.NodeOutput(triple.out(0), expand=graph.finalize())


_IMAGE_OR_MASK = io.MatchType.Template("image_or_mask", [io.Image, io.Mask])


class V3Adjust(io.ComfyNode):
    """An image or a mask, brightened or gamma-corrected: a DynamicCombo whose options bring their own widgets,
    a nested one, and a MatchType socket whose output has the input's type."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Adjust", category="v3/image",
            inputs=[io.MatchType.Input("image", _IMAGE_OR_MASK),
                    io.DynamicCombo.Input("method", options=[
                        io.DynamicCombo.Option("brighten", [io.Float.Input("amount", default=0.1, max=1.0)]),
                        io.DynamicCombo.Option("gamma", [
                            io.Float.Input("gamma", default=2.0, min=0.1),
                            io.DynamicCombo.Input("clamp", options=[
                                io.DynamicCombo.Option("off", []),
                                io.DynamicCombo.Option("on", [io.Float.Input("top", default=1.0)])])]),
                    ], tooltip="How to adjust.")],
            outputs=[io.MatchType.Output(_IMAGE_OR_MASK, display_name="output")])

    @classmethod
    def execute(cls, image, method):
        if method["method"] == "brighten":
            return io.NodeOutput(image + method["amount"])
        adjusted = image ** method["gamma"]
        if method["clamp"]["clamp"] == "on":
            adjusted = adjusted.clamp(max=method["clamp"]["top"])
        return io.NodeOutput(adjusted)


class V3Sum(io.ComfyNode):
    """Sums its numbers: an Autogrow of INT or FLOAT sockets named n0, n1, ... (two required)."""

    @classmethod
    def define_schema(cls):
        number = io.MultiType.Input("n", [io.Int, io.Float])
        return io.Schema(node_id="V3Sum", category="v3/math",
                         inputs=[io.Autogrow.Input("numbers", template=io.Autogrow.TemplatePrefix(
                             number, prefix="n", min=2, max=5)),
                                 io.Autogrow.Input("extra", template=io.Autogrow.TemplateNames(
                                     io.Int.Input("e", optional=True), names=["x", "y"], min=0))],
                         outputs=[io.Float.Output()])

    @classmethod
    def execute(cls, numbers, extra):
        return io.NodeOutput(float(sum(numbers.values()) + sum(extra.values())),
                             ui=ui.PreviewText(",".join(sorted(numbers)) + "|" + ",".join(sorted(extra))))


class V3Extension(ComfyExtension):
    loaded = False

    async def on_load(self):
        V3Extension.loaded = True

    async def get_node_list(self):
        return [V3Add, V3Pick, V3Even, V3Range, V3Darken, V3Triple, V3Adjust, V3Sum]


async def comfy_entrypoint():
    return V3Extension()


