"""Our port of ComfyUI's execution test suite (tests/execution/test_execution.py): a real `main.py` per cache mode,
driven over HTTP and the websocket exactly as ComfyUI's own test client drives ComfyUI, with the node pack in
tests/server/comfy_testing_pack/. The same behaviours are checked, in our own words: lazy inputs, caching in each
mode, IS_CHANGED, VALIDATE_INPUTS, cycles, missing nodes, expansion and loops, blockers in lists, async nodes
overlapping, partial execution and history paging."""
import asyncio
import contextlib
import io
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy
import pytest
from PIL import Image

from engine.control_flow import GraphBuilder
from tests.server.test_persistence import free_port

PROJECT = Path(__file__).resolve().parents[2]
PACK = Path(__file__).resolve().parent / "comfy_testing_pack"
START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 30


class PromptRejected(Exception):
    """POST /prompt answered 400: `body` is ComfyUI's error object with node_errors."""

    def __init__(self, body):
        super().__init__(body)
        self.body = body


class PromptFailed(Exception):
    """The prompt ran and failed: `data` is its `execution_error` message."""

    def __init__(self, data):
        super().__init__(data)
        self.data = data


@dataclass
class Outcome:
    """What a client saw of one prompt: the nodes it was told ran or were cached, and its history outputs."""

    prompt_id: str
    ran: set = field(default_factory=set)
    cached: set = field(default_factory=set)
    outputs: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)  # node id -> list of numpy arrays fetched through /view
    progress_states: list = field(default_factory=list)  # the `nodes` of each progress_state message

    def done(self, node) -> bool:
        return node.id in self.ran or node.id in self.cached


@dataclass(frozen=True)
class Server:
    base: str
    caches: bool  # whether this mode keeps outputs between prompts


class Client:
    """ComfyUI's test client in miniature: queue a prompt, follow the websocket to its end, read history and
    fetch the images through /view."""

    def __init__(self, session: aiohttp.ClientSession, socket, server: Server, client_id: str, name: str) -> None:
        self.session, self.socket, self.server, self.client_id, self.name = session, socket, server, client_id, name

    async def queue(self, graph: GraphBuilder, targets=None) -> str:
        body = {"prompt": graph.finalize(), "client_id": self.client_id}
        if targets is not None:
            body["partial_execution_targets"] = targets
        async with self.session.post(f"{self.server.base}/prompt", json=body) as response:
            answer = await response.json()
            if response.status == 400:
                raise PromptRejected(answer)
            assert response.status == 200, answer
            return answer["prompt_id"]

    async def run(self, graph: GraphBuilder, targets=None) -> Outcome:
        """Queue `graph` and follow it to its end; `progress_states` collects its progress_state messages."""
        for node in graph.nodes.values():
            if node.class_type == "SaveImage":
                node.set_input("filename_prefix", self.name)
        outcome = Outcome(await self.queue(graph, targets))
        failure = None
        while True:
            message = await asyncio.wait_for(self.socket.receive_json(), RUN_TIMEOUT_S)
            data = message.get("data", {})
            if data.get("prompt_id") != outcome.prompt_id:
                continue
            if message["type"] == "executing":
                if data["node"] is None:
                    break
                outcome.ran.add(data["node"])
            elif message["type"] == "execution_cached":
                outcome.cached.update(data["nodes"])
            elif message["type"] == "progress_state":
                outcome.progress_states.append(data["nodes"])
            elif message["type"] == "execution_error":
                failure = data
        if failure is not None:
            raise PromptFailed(failure)
        entry = (await self.get_json(f"/history/{outcome.prompt_id}"))[outcome.prompt_id]  # there as soon as it ends
        outcome.outputs = entry["outputs"]
        for node_id, output in outcome.outputs.items():
            outcome.images[node_id] = [await self.image(item) for item in output.get("images", [])]
        return outcome

    async def get_json(self, path: str, **query):
        async with self.session.get(f"{self.server.base}{path}", params=query) as response:
            assert response.status == 200
            return await response.json()

    async def image(self, item) -> numpy.ndarray:
        query = {"filename": item["filename"], "subfolder": item["subfolder"], "type": item["type"]}
        async with self.session.get(f"{self.server.base}/view", params=query) as response:
            assert response.status == 200
            return numpy.array(Image.open(io.BytesIO(await response.read())))


def uniform(image: numpy.ndarray) -> int:
    """The one pixel value of an image that must be uniform."""
    assert image.min() == image.max(), f"image is not uniform: {image.min()}..{image.max()}"
    return int(image.min())


# "ram" is ComfyUI's RAM-pressure cache with a 1 MiB headroom, which any machine running this has free: every
# output stays (tests/engine/test_ram_pressure_cache.py checks what goes under pressure)
MODES = {"classic": (["--cache-classic"], True), "lru": (["--cache-lru", "100"], True),
         "none": (["--cache-none"], False), "ram": (["--cache-ram", "0.001"], True)}


@pytest.fixture(scope="class", params=list(MODES))
def server(request, tmp_path_factory):
    """`main.py` with the test pack, in one cache mode, for the whole class."""
    flags, caches = MODES[request.param]
    base = tmp_path_factory.mktemp(f"exec-{request.param}")
    (base / "plugins").mkdir()
    (base / "plugins" / PACK.name).symlink_to(PACK)
    port = free_port()
    command = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--cpu", "--threads", "1",
               "--no-demo-models", "--custom-nodes-dir", str(base / "plugins"), *flags]
    for folder in ("models", "input", "output", "temp", "user"):
        command += [f"--{folder}-dir", str(base / folder)]
    log = open(base / "server.log", "wb")
    process = subprocess.Popen(command, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _wait_until_serving(port, process, base / "server.log")
        yield Server(f"http://127.0.0.1:{port}", caches)
    finally:
        process.kill()
        process.wait(10)
        log.close()


def _wait_until_serving(port: int, process: subprocess.Popen, log: Path) -> None:
    """Wait until the server answers with its nodes known; fail at once if the pack did not load."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info/FlatImage", timeout=2) as answer:
                if b"FlatImage" in answer.read():
                    return
                break
        except urllib.error.HTTPError:  # serving, but without the pack's nodes
            break
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"main.py did not serve the test pack:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
async def client(server, request):
    client_id = str(uuid.uuid4())
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.base}/ws?clientId={client_id}") as socket:
            name = "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]
            yield Client(session, socket, server, client_id, f"exec_{name}")


@pytest.fixture
def graph(request):
    return GraphBuilder(prefix=request.node.name)


def image(graph, content, size=32):
    return graph.node("FlatImage", content=content, height=size, width=size, batch_size=1)


def mask(graph, value, size=32):
    return graph.node("FlatMask", value=value, height=size, width=size, batch_size=1)


@pytest.mark.usefixtures("server")
class TestComfyExecution:
    # ---- lazy inputs and caching ---------------------------------------------------------------------------
    async def test_lazy_input_evaluates_only_what_the_mask_needs(self, client, graph):
        black, white, zero = image(graph, "BLACK"), image(graph, "WHITE"), mask(graph, 0.0)
        blend = graph.node("LazyBlend", first=black.out(0), second=white.out(0), mask=zero.out(0))
        save = graph.node("SaveImage", images=blend.out(0))
        outcome = await client.run(graph)
        assert uniform(outcome.images[save.id][0]) == 0
        assert outcome.done(black) and outcome.done(zero) and outcome.done(blend)
        assert white.id not in outcome.ran

    async def test_rerunning_a_prompt_runs_nothing_when_caching(self, client, graph, server):
        blend = graph.node("LazyBlend", first=image(graph, "BLACK").out(0), second=image(graph, "NOISE").out(0),
                           mask=mask(graph, 0.5).out(0))
        graph.node("SaveImage", images=blend.out(0))
        await client.run(graph)
        again = await client.run(graph)
        for node_id in graph.nodes:
            if server.caches:
                assert node_id not in again.ran and node_id in again.cached
            else:
                assert node_id in again.ran and node_id not in again.cached

    async def test_a_changed_widget_reruns_only_downstream(self, client, graph, server):
        black, noise, half = image(graph, "BLACK"), image(graph, "NOISE"), mask(graph, 0.5)
        blend = graph.node("LazyBlend", first=black.out(0), second=noise.out(0), mask=half.out(0))
        graph.node("SaveImage", images=blend.out(0))
        await client.run(graph)
        half.set_input("value", 0.4)
        again = await client.run(graph)
        assert {half.id, blend.id} <= again.ran
        assert (black.id in again.ran) is not server.caches and (noise.id in again.ran) is not server.caches

    async def test_a_failing_node_reports_its_prompt(self, client, graph):
        blend = graph.node("LazyBlend", first=image(graph, "BLACK").out(0), second=image(graph, "NOISE", 16).out(0),
                           mask=mask(graph, 0.5).out(0))
        graph.node("SaveImage", images=blend.out(0))
        with pytest.raises(PromptFailed) as failed:
            await client.run(graph)
        assert failed.value.data["node_id"] == blend.id and "prompt_id" in failed.value.data
        assert "differ" in failed.value.data["exception_message"]

    # ---- validation ----------------------------------------------------------------------------------------
    @pytest.mark.parametrize("value, accepted", [(5, False), ("foo", False), (5.0, True)])
    async def test_validate_inputs_judges_constants_it_names(self, client, graph, value, accepted):
        product = graph.node("ProductChecked", first=value, second=3.0)
        save = graph.node("SaveImage", images=product.out(0))
        if not accepted:
            with pytest.raises(PromptRejected) as rejected:
                await client.run(graph)
            [error] = rejected.value.body["node_errors"][product.id]["errors"]
            assert error["type"] == "custom_validation_failed"
            return
        assert uniform((await client.run(graph)).images[save.id][0]) == 255  # 5 * 3, clipped

    @pytest.mark.parametrize("source", ["INT", "MASK"])
    async def test_links_of_other_types_fail_the_engines_type_check(self, client, graph, source):
        linked = graph.node("IntValue", value=5) if source == "INT" else mask(graph, 0.5)
        graph.node("SaveImage", images=graph.node("ProductChecked", first=linked.out(0), second=3.0).out(0))
        with pytest.raises(PromptRejected) as rejected:
            await client.run(graph)
        errors = [e["type"] for node in rejected.value.body["node_errors"].values() for e in node["errors"]]
        assert errors == ["return_type_mismatch"]

    @pytest.mark.parametrize("kind", ["ProductCheckedWithTypes", "ProductCheckedRequired"])
    @pytest.mark.parametrize("source, accepted", [("IntValue", False), ("FloatValue", True)])
    async def test_linked_inputs_reach_validate_inputs_as_none(self, client, graph, kind, source, accepted):
        product = graph.node(kind, first=graph.node(source, value=0.25 if accepted else 5).out(0), second=2.0)
        save = graph.node("SaveImage", images=product.out(0))
        if not accepted:
            with pytest.raises(PromptRejected):
                await client.run(graph)
            return
        assert uniform((await client.run(graph)).images[save.id][0]) == 127  # 0.25 * 2 = 0.5

    @pytest.mark.parametrize("second, accepted", [(0.5, True), (5.0, True), (7.0, False)])
    async def test_validate_inputs_with_kwargs_checks_every_input_itself(self, client, graph, second, accepted):
        graph.node("SaveImage", images=graph.node("ProductNoSevens", first=0.0, second=second).out(0))
        if accepted:
            await client.run(graph)  # 5.0 is beyond the declared max, but the node's own check lets it through
        else:
            with pytest.raises(PromptRejected):
                await client.run(graph)

    async def test_a_cycle_in_the_prompt_is_rejected(self, client, graph):
        half = mask(graph, 0.5)
        one = graph.node("LazyBlend", first=image(graph, "BLACK").out(0), mask=half.out(0))
        two = graph.node("LazyBlend", first=one.out(0), second=image(graph, "WHITE").out(0), mask=half.out(0))
        one.set_input("second", two.out(0))
        graph.node("SaveImage", images=two.out(0))
        with pytest.raises(PromptRejected):
            await client.run(graph)

    async def test_a_cycle_made_by_an_expansion_is_the_expanding_nodes_error(self, client, graph):
        maker = graph.node("CycleMaker", first=image(graph, "BLACK").out(0), second=image(graph, "WHITE").out(0))
        graph.node("SaveImage", images=maker.out(0))
        with pytest.raises(PromptFailed) as failed:
            await client.run(graph)
        assert failed.value.data["node_id"] == maker.id

    async def test_an_output_behind_a_missing_node_is_left_out_and_the_rest_runs(self, client, graph):
        half, black = mask(graph, 0.5), image(graph, "BLACK")
        gone = graph.node("FlatImage", id="gone", content="WHITE", height=32, width=32, batch_size=1)
        broken = graph.node("LazyBlend", first=black.out(0), second=gone.out(0), mask=half.out(0))
        fine = graph.node("LazyBlend", first=black.out(0), second=image(graph, "WHITE").out(0), mask=half.out(0))
        broken_save = graph.node("SaveImage", images=broken.out(0))
        fine_save = graph.node("SaveImage", images=fine.out(0))
        graph.remove_node("gone")
        outcome = await client.run(graph)
        assert uniform(outcome.images[fine_save.id][0]) == 127 and broken_save.id not in outcome.outputs
        graph.node("FlatImage", id="gone", content="WHITE", height=32, width=32, batch_size=1)
        assert len((await client.run(graph)).images[broken_save.id]) == 1  # the server is none the worse

    # ---- IS_CHANGED ----------------------------------------------------------------------------------------
    async def test_is_changed_nan_reruns_every_time(self, client, graph, server):
        save = graph.node("SaveImage")  # created first, so its id sorts before its inputs'
        switch = graph.node("PassMaybeRerun", always_rerun=False)
        save.set_input("images", switch.out(0))
        switch.set_input("image", image(graph, "BLACK").out(0))
        first, second = await client.run(graph), await client.run(graph)
        switch.set_input("always_rerun", True)
        third, fourth = await client.run(graph), await client.run(graph)
        assert switch.id in first.ran and (switch.id in second.ran) is not server.caches
        assert switch.id in third.ran and switch.id in fourth.ran

    async def test_is_changed_gets_linked_inputs_as_none(self, client, graph, server):
        grey = graph.node("ScaleByConstant", image=image(graph, "WHITE").out(0), factor=0.25)
        show = graph.node("PreviewImage", images=grey.out(0))
        first = await client.run(graph)
        second = await client.run(graph)
        assert uniform(first.images[show.id][0]) == uniform(second.images[show.id][0]) == 63
        assert (grey.id in second.ran) is not server.caches

    # ---- undeclared inputs, expansion, loops, lists --------------------------------------------------------
    async def test_undeclared_inputs_reach_kwargs(self, client, graph):
        images = {f"image{n}": image(graph, content).out(0)
                  for n, content in enumerate(["BLACK", "WHITE", "BLACK", "BLACK"], 1)}
        save = graph.node("SaveImage", images=graph.node("MeanOfImages", **images).out(0))
        assert uniform((await client.run(graph)).images[save.id][0]) == 255 // 4

    async def test_a_loop_of_expansions_over_raw_links_and_dynprompt(self, client, graph):
        rerun = graph.node("PassMaybeRerun", image=image(graph, "WHITE").out(0), always_rerun=True)
        start = graph.node("CountedLoopStart", remaining=1, value=rerun.out(0))
        halve = graph.node("MeanOfImages", image1=image(graph, "BLACK").out(0), image2=start.out(1))
        end = graph.node("CountedLoopEnd", loop=start.out(0), value=halve.out(0))
        save = graph.node("SaveImage", images=end.out(0))
        for passes in (1, 2, 3):
            start.set_input("remaining", passes)
            outcome = await client.run(graph)
            assert uniform(outcome.images[save.id][0]) == 255 // 2 ** passes
            assert rerun.id in outcome.ran

    async def test_literal_and_expanded_results_mix_in_one_list(self, client, graph):
        levels = graph.node("MakeList", value1=0.1, value2=0.2, value3=0.3)
        mixed = graph.node("LevelOrExpansion", level=levels.out(0))
        grey, white = graph.node("SaveImage", images=mixed.out(0)), graph.node("SaveImage", images=mixed.out(1))
        outcome = await client.run(graph)
        assert [uniform(picture) for picture in outcome.images[grey.id]] == [25, 51, 76]
        assert [uniform(picture) for picture in outcome.images[white.id]] == [255, 255, 255]

    async def test_lazy_inputs_map_over_a_list(self, client, graph):
        masks = graph.node("FlatMask", value=graph.node("MakeList", value1=0.0, value2=0.5, value3=1.0).out(0),
                           height=32, width=32, batch_size=1)
        blend = graph.node("LazyBlend", first=image(graph, "BLACK").out(0), second=image(graph, "WHITE").out(0),
                           mask=masks.out(0))
        save = graph.node("SaveImage", images=graph.node("RebatchImages", images=blend.out(0), batch_size=3).out(0))
        assert [uniform(picture) for picture in (await client.run(graph)).images[save.id]] == [0, 127, 255]

    async def test_one_output_feeds_two_outputs(self, client, graph):
        black = image(graph, "BLACK")
        one, two = graph.node("SaveImage", images=black.out(0)), graph.node("SaveImage", images=black.out(0))
        outcome = await client.run(graph)
        assert len(outcome.images[one.id]) == len(outcome.images[two.id]) == 1

    async def test_a_blocker_in_a_list_blocks_only_its_item(self, client, graph):
        pictures = graph.node("MakeList", value1=image(graph, "BLACK").out(0), value2=image(graph, "WHITE").out(0),
                              value3=image(graph, "BLACK", 16).out(0))
        numbers = graph.node("MakeList", **{f"value{n}": graph.node("IntValue", value=n).out(0) for n in (1, 2, 3)})
        is_two = graph.node("IntEquals", a=numbers.out(0), b=2)
        gate = graph.node("Gate", value=pictures.out(0), block=is_two.out(0))
        show = graph.node("PreviewImage", images=graph.node("MakeList", value1=gate.out(0)).out(0))
        outcome = await client.run(graph)
        assert show.id in outcome.ran
        assert [(uniform(picture), picture.shape[0]) for picture in outcome.images[show.id]] == [(0, 32), (0, 16)]

    # ---- async nodes ---------------------------------------------------------------------------------------
    async def test_independent_async_nodes_overlap(self, client, graph):
        source = image(graph, "BLACK")
        pauses = [graph.node("AsyncPause", value=source.out(0), seconds=seconds) for seconds in (0.3, 0.4, 0.35)]
        outcome = await client.run(graph)
        spans = [outcome.outputs[pause.id]["slept"][0] for pause in pauses]
        assert max(began for began, _ in spans) < min(ended for _, ended in spans), spans

    async def test_async_nodes_made_by_an_expansion_overlap(self, client, graph):
        parallel = graph.node("ParallelPauses", image1=image(graph, "BLACK").out(0),
                              image2=image(graph, "WHITE").out(0), image3=image(graph, "WHITE").out(0), seconds=0.3)
        save = graph.node("SaveImage", images=parallel.out(0))
        outcome = await client.run(graph)
        spans = outcome.outputs[parallel.id]["slept"]  # expanded nodes report under the node that made them
        assert len(spans) == 3 and max(b for b, _ in spans) < min(e for _, e in spans), spans
        assert uniform(outcome.images[save.id][0]) == 170

    async def test_progress_state_reaches_only_the_client_that_queued(self, client, graph, server):
        async with client.session.ws_connect(f"{server.base}/ws?clientId=bystander-{uuid.uuid4()}") as other:
            assert (await other.receive_json(timeout=5))["type"] == "status"  # registered with the hub by now
            show = graph.node("PreviewImage", images=image(graph, "WHITE", 24).out(0))
            outcome = await client.run(graph)
            assert outcome.progress_states[-1][show.id]["state"] == "finished"
            assert {entry["prompt_id"] for nodes in outcome.progress_states for entry in nodes.values()} == {
                outcome.prompt_id}
            heard = []
            with contextlib.suppress(asyncio.TimeoutError):
                while True:
                    heard.append((await other.receive_json(timeout=0.3))["type"])
        assert heard.count("status") >= 2  # it was listening: the queue's broadcasts reached it
        assert "progress_state" not in heard and "executing" not in heard

    @pytest.mark.parametrize("node_type", ["SyncProgressSteps", "AsyncProgressSteps"])
    async def test_comfy_api_set_progress_reaches_progress_state(self, client, graph, node_type):
        counter = graph.node(node_type, value=graph.node("IntValue", value=7).out(0), steps=3)
        show = graph.node("PreviewAny", source=counter.out(0))
        outcome = await client.run(graph)
        running = [(nodes[counter.id]["value"], nodes[counter.id]["max"]) for nodes in outcome.progress_states
                   if nodes.get(counter.id, {}).get("state") == "running"]
        assert [step for step in running if step[0]] == [(1, 3), (2, 3), (3, 3)]  # after its start at 0
        assert outcome.progress_states[-1][counter.id]["state"] == "finished"
        assert outcome.outputs[show.id]["text"] == ["7"]

    # ---- partial execution ---------------------------------------------------------------------------------
    async def test_partial_execution_runs_only_the_chosen_outputs(self, client, graph):
        first, second, third = image(graph, "BLACK"), image(graph, "WHITE"), image(graph, "NOISE")
        saves = [graph.node("SaveImage", images=picture.out(0)) for picture in (first, second, third)]
        outcome = await client.run(graph, targets=[saves[0].id, saves[2].id])
        assert all(outcome.done(node) for node in (first, third, saves[0], saves[2]))
        assert second.id not in outcome.ran and saves[1].id not in outcome.ran
        assert len(outcome.images[saves[0].id]) == 1 and saves[1].id not in outcome.outputs

    async def test_partial_execution_runs_output_nodes_the_target_depends_on(self, client, graph):
        black, white = image(graph, "BLACK"), image(graph, "WHITE")
        shown = graph.node("ScaleAndShow", image=black.out(0), factor=1.5)
        shown_again = graph.node("ScaleAndShow", image=shown.out(0), factor=2.0)
        saves = [graph.node("SaveImage", images=node.out(0)) for node in (shown, shown_again, white)]
        outcome = await client.run(graph, targets=[saves[1].id])
        assert all(outcome.done(node) for node in (black, shown, shown_again, saves[1]))
        assert not {white.id, saves[0].id, saves[2].id} & outcome.ran

    async def test_partial_execution_keeps_lazy_inputs_lazy(self, client, graph):
        black, white, noise = image(graph, "BLACK"), image(graph, "WHITE"), image(graph, "NOISE")
        zero, half = mask(graph, 0.0), mask(graph, 0.5)
        chosen = graph.node("LazyBlend", first=black.out(0), second=white.out(0), mask=zero.out(0))
        other = graph.node("LazyBlend", first=white.out(0), second=noise.out(0), mask=half.out(0))
        target = graph.node("SaveImage", images=chosen.out(0))
        left_out = graph.node("SaveImage", images=other.out(0))
        outcome = await client.run(graph, targets=[target.id])
        assert all(outcome.done(node) for node in (black, zero, chosen, target))
        assert not {white.id, noise.id, half.id, other.id, left_out.id} & outcome.ran

    async def test_an_empty_target_list_is_rejected(self, client, graph):
        graph.node("SaveImage", images=image(graph, "BLACK").out(0))
        with pytest.raises(PromptRejected):
            await client.run(graph, targets=[])

    async def test_cached_outputs_reach_the_history_of_a_prompt_nobody_listens_to(self, client, graph, server):
        """Queued with no client_id, a prompt whose output node is a cache hit still records that node's output
        in its history (what ComfyUI's job list shows), although no websocket hears its `executed`."""
        save = graph.node("SaveImage", images=image(graph, "BLACK").out(0))
        first = await client.run(graph)
        async with client.session.post(f"{server.base}/prompt", json={"prompt": graph.finalize()}) as response:
            assert response.status == 200
            prompt_id = (await response.json())["prompt_id"]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while prompt_id not in (history := await client.get_json(f"/history/{prompt_id}")):
            assert time.monotonic() < deadline, "the anonymous prompt never finished"
            await asyncio.sleep(0.05)
        entry = history[prompt_id]
        assert entry["status"]["status_str"] == "success"
        cached = next(data["nodes"] for kind, data in entry["status"]["messages"] if kind == "execution_cached")
        if server.caches:
            assert save.id in cached and entry["outputs"][save.id] == first.outputs[save.id]
        else:
            assert save.id not in cached and len(entry["outputs"][save.id]["images"]) == 1
            assert entry["outputs"][save.id] != first.outputs[save.id]  # saved again, under the next number

    # ---- history paging ------------------------------------------------------------------------------------
    async def test_history_pages_by_max_items_and_offset(self, client, graph):
        graph.node("SaveImage", images=image(graph, "BLACK").out(0))
        for _ in range(4):
            await client.run(graph)
        everything = await client.get_json("/history")
        assert len(everything) >= 4
        first_two = await client.get_json("/history", max_items=2, offset=0)
        next_two = await client.get_json("/history", max_items=2, offset=2)
        assert len(first_two) == len(next_two) == 2 and not set(first_two) & set(next_two)
        assert await client.get_json("/history", offset=0) == everything
        assert len(await client.get_json("/history", offset=2)) == len(everything) - 2
        assert await client.get_json("/history", offset=len(everything)) == {}
        assert len(await client.get_json("/history", max_items=5, offset=len(everything) - 1)) == 1

