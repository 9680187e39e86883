"""Progress nodes of the execution-suite pack, after ComfyUI's api_test_nodes.py: they report through
`comfy_api.v0_0_2`'s `ComfyAPI` (async) and `ComfyAPISync`. Ours count whole steps instead of sleeping for a time,
so the values they report are known in advance."""
import asyncio

from comfy_api.v0_0_2 import ComfyAPI, ComfyAPISync

api = ComfyAPI()
api_sync = ComfyAPISync()


def _progress_inputs():
    return {"required": {"value": ("*",), "steps": ("INT", {"default": 3, "min": 1, "max": 100})}}


class SyncProgressSteps:
    """Passes `value` through after reporting 1..steps of `steps` with `ComfyAPISync`."""

    DESCRIPTION = "Reports progress synchronously."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("*",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return _progress_inputs()

    def execute(self, value, steps):
        for step in range(1, steps + 1):
            api_sync.execution.set_progress(value=step, max_value=steps)
        return (value,)


class AsyncProgressSteps:
    """Passes `value` through after reporting 1..steps of `steps` with `ComfyAPI`, yielding to the loop between."""

    DESCRIPTION = "Reports progress from an async node."
    CATEGORY = "testing/execution"
    RETURN_TYPES = ("*",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return _progress_inputs()

    async def execute(self, value, steps):
        for step in range(1, steps + 1):
            await api.execution.set_progress(value=step, max_value=steps)
            await asyncio.sleep(0)
        return (value,)


NODES = {"SyncProgressSteps": SyncProgressSteps, "AsyncProgressSteps": AsyncProgressSteps}
