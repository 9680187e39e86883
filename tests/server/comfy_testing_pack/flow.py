"""Control-flow nodes of the execution-suite pack: lists, blockers, expansions (a counted loop built on raw links
and DYNPROMPT, a node that expands into a cycle, mixed literal/expanded results) and async sleeps."""
import asyncio
import time

import torch
from comfy_execution.graph import ExecutionBlocker
from comfy_execution.graph_utils import GraphBuilder, is_link

LIST_SLOTS = 5


class MakeList:
    """Its inputs value1..value5, in order, as one list output (whatever their type)."""

    DESCRIPTION = "Collects its inputs into a list."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("*",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "collect"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value1": ("*",)},
                "optional": {f"value{n}": ("*",) for n in range(2, LIST_SLOTS + 1)}}

    def collect(self, **values):
        return ([values[f"value{n}"] for n in range(1, LIST_SLOTS + 1) if f"value{n}" in values],)


class IntEquals:
    DESCRIPTION = "Whether two INTs are equal."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "compare"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0}), "b": ("INT", {"default": 0})}}

    def compare(self, a, b):
        return (a == b,)


class Gate:
    """Passes `value` on, or a silent ExecutionBlocker when `block` is true."""

    DESCRIPTION = "Blocks everything downstream while block is true."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("*",)
    FUNCTION = "gate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",), "block": ("BOOLEAN", {"default": False})}}

    def gate(self, value, block):
        return (ExecutionBlocker(None) if block else value,)


class CountedLoopStart:
    """The head of a counted loop: passes `value` into the body; `remaining` is how many passes are left."""

    DESCRIPTION = "Start of a loop that runs its body `remaining` times."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("COUNTED_LOOP", "*")
    FUNCTION = "start"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"remaining": ("INT", {"default": 1, "min": 1, "max": 100}), "value": ("*",)}}

    def start(self, remaining, value):
        return ("loop", value)


class CountedLoopEnd:
    """The tail of a counted loop. Both inputs are raw links: `loop` names the start node, `value` the body's
    result. With passes left it expands into a copy of the body (read from DYNPROMPT) fed by this pass's result
    and ending in a copy of itself; on the last pass it returns the body's result."""

    DESCRIPTION = "End of a loop started by CountedLoopStart."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("*",)
    FUNCTION = "end"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"loop": ("COUNTED_LOOP", {"rawLink": True}), "value": ("*", {"rawLink": True})},
                "hidden": {"dynprompt": "DYNPROMPT", "unique_id": "UNIQUE_ID"}}

    def end(self, loop, value, dynprompt, unique_id):
        start_id = loop[0]
        start = dynprompt.get_node(start_id)
        remaining = start["inputs"]["remaining"]
        if remaining <= 1:
            return {"result": (value,), "expand": {}}
        graph = GraphBuilder(prefix=unique_id)
        body = _nodes_between(dynprompt, start_id, unique_id)
        copies = {node_id: graph.node(dynprompt.get_node(node_id)["class_type"], node_id) for node_id in body}
        copies[start_id] = graph.node(start["class_type"], start_id, remaining=remaining - 1, value=value)
        copies[unique_id] = graph.node(dynprompt.get_node(unique_id)["class_type"], unique_id)
        for node_id in body + [unique_id]:
            for name, given in dynprompt.get_node(node_id)["inputs"].items():
                inside = is_link(given) and given[0] in copies
                copies[node_id].set_input(name, copies[given[0]].out(given[1]) if inside else given)
        for node_id, copy in copies.items():
            copy.set_override_display_id(dynprompt.get_display_node_id(node_id))
        return {"result": (copies[unique_id].out(0),), "expand": graph.finalize()}


def _nodes_between(dynprompt, start_id: str, end_id: str) -> list[str]:
    """The nodes upstream of `end_id` that depend on `start_id` (the loop body), in a stable order."""
    upstream: dict[str, set[str]] = {}
    pending = [end_id]
    while pending:
        node_id = pending.pop()
        sources = {given[0] for given in dynprompt.get_node(node_id)["inputs"].values() if is_link(given)}
        upstream[node_id] = sources
        pending.extend(source for source in sources if source not in upstream)
    reaches_start: dict[str, bool] = {}

    def depends_on_start(node_id: str) -> bool:
        if node_id not in reaches_start:
            reaches_start[node_id] = node_id == start_id or any(map(depends_on_start, upstream.get(node_id, ())))
        return reaches_start[node_id]

    return sorted(node_id for node_id in upstream if node_id not in (start_id, end_id) and depends_on_start(node_id))


class CycleMaker:
    """Expands into two blends that feed each other: a cycle that exists only at run time."""

    DESCRIPTION = "Expands into a dependency cycle (an error)."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "expand"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"first": ("IMAGE",), "second": ("IMAGE",)}}

    def expand(self, first, second):
        graph = GraphBuilder()
        mask = graph.node("FlatMask", value=0.5)
        one = graph.node("LazyBlend", first=first, mask=mask.out(0))
        two = graph.node("LazyBlend", first=one.out(0), second=second, mask=mask.out(0))
        one.set_input("second", two.out(0))
        return {"result": (two.out(0),), "expand": graph.finalize()}


class LevelOrExpansion:
    """Two IMAGE outputs: a grey image of level `level` (up to 0.1 as a tuple, up to 0.2 as a dict, above that
    from an expansion blending black and white by a 0.3 mask) and, always as a literal, a white image."""

    DESCRIPTION = "Returns literal results or an expansion, depending on the level."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    FUNCTION = "level"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"level": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0})}}

    def level(self, level):
        white = torch.ones((1, 32, 32, 3))
        if level <= 0.1:
            return (white * 0.1, white)
        if level <= 0.2:
            return {"result": (white * 0.2, white)}
        graph = GraphBuilder()
        blend = graph.node("LazyBlend", first=graph.node("FlatImage", content="BLACK").out(0),
                           second=graph.node("FlatImage", content="WHITE").out(0),
                           mask=graph.node("FlatMask", value=0.3).out(0))
        return {"result": (blend.out(0), white), "expand": graph.finalize()}


class AsyncPause:
    """An async output node: awaits `seconds`, passes `value` on and reports when it slept (server clock), so a
    test can tell that sleeps overlapped without timing anything itself."""

    DESCRIPTION = "Sleeps asynchronously and reports when."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("*",)
    FUNCTION = "pause"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",), "seconds": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 10.0})}}

    async def pause(self, value, seconds):
        began = time.time()
        await asyncio.sleep(seconds)
        return {"ui": {"slept": [[began, time.time()]]}, "result": (value,)}


class ParallelPauses:
    """Expands into three AsyncPause nodes, one per image, and the mean of what they pass on."""

    DESCRIPTION = "Pauses three images in parallel and averages them."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "expand"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",), "image3": ("IMAGE",),
                             "seconds": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 10.0})}}

    def expand(self, image1, image2, image3, seconds):
        graph = GraphBuilder()
        paused = [graph.node("AsyncPause", value=image, seconds=seconds) for image in (image1, image2, image3)]
        mean = graph.node("MeanOfImages", **{f"image{n}": node.out(0) for n, node in enumerate(paused, 1)})
        return {"result": (mean.out(0),), "expand": graph.finalize()}


NODES = {"MakeList": MakeList, "IntEquals": IntEquals, "Gate": Gate, "CountedLoopStart": CountedLoopStart,
         "CountedLoopEnd": CountedLoopEnd, "CycleMaker": CycleMaker, "LevelOrExpansion": LevelOrExpansion,
         "AsyncPause": AsyncPause, "ParallelPauses": ParallelPauses}
