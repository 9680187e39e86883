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


class V3Extension(ComfyExtension):
    loaded = False

    async def on_load(self):
        V3Extension.loaded = True

    async def get_node_list(self):
        return [V3Add, V3Pick, V3Even, V3Range, V3Darken, V3Triple]


async def comfy_entrypoint():
    return V3Extension()


