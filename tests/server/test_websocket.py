import asyncio
import json
import struct

from aiohttp import WSMsgType

from tests.server.conftest import wait_for_history

PREVIEWING = {"1": {"class_type": "Const", "inputs": {"value": 4}},
              "2": {"class_type": "Previewing", "inputs": {"value": ["1", 0], "steps": 2}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}


async def collect_until_done(socket, prompt_id, timeout=10.0):
    """Messages (type, data) and binary frames in arrival order, until this prompt's `executing: None`."""
    received = []
    async with asyncio.timeout(timeout):
        async for message in socket:
            if message.type == WSMsgType.BINARY:
                received.append(("binary", message.data))
                continue
            body = message.json()
            received.append((body["type"], body["data"]))
            if body["type"] == "executing" and body["data"]["node"] is None \
                    and body["data"].get("prompt_id") == prompt_id:
                return received
    return received


async def test_status_on_connect_and_feature_flags(client):
    socket = await client.ws_connect("/ws?clientId=me")
    first = await socket.receive_json()
    assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "me"}}
    await socket.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    reply = await socket.receive_json()
    assert reply["type"] == "feature_flags" and "max_upload_size" in reply["data"]
    await socket.close()


async def test_events_arrive_in_order_with_a_preview_frame(client):
    socket = await client.ws_connect("/ws?clientId=artist")
    await socket.receive_json()
    response = await client.post("/prompt", json={"prompt": PREVIEWING, "client_id": "artist"})
    prompt_id = (await response.json())["prompt_id"]
    received = await collect_until_done(socket, prompt_id)
    kinds = [kind for kind, _ in received if kind not in ("status", "progress_state")]
    assert kinds == ["execution_start", "execution_cached", "executing", "executing", "progress", "binary",
                     "progress", "binary", "executing", "executed", "execution_success", "executing"]
    executing = [data["node"] for kind, data in received if kind == "executing"]
    assert executing == ["1", "2", "3", None]
    frame = next(data for kind, data in received if kind == "binary")
    event_type, image_format = struct.unpack(">II", frame[:8])
    assert (event_type, image_format) == (1, 1) and frame[8:10] == b"\xff\xd8"  # a JPEG follows the header
    progress = [data for kind, data in received if kind == "progress"]
    assert [(p["value"], p["max"], p["node"], p["prompt_id"]) for p in progress] == [
        (1, 2, "2", prompt_id), (2, 2, "2", prompt_id)]
    executed = next(data for kind, data in received if kind == "executed")
    assert executed["output"] == {"values": [4]} and executed["prompt_id"] == prompt_id
    await socket.close()


async def test_previews_with_metadata_for_clients_that_ask(client):
    """ComfyUI's type-4 frame: the preview's node and prompt in a JSON header, for a socket that said it takes
    them; another socket of the same client that did not still gets type 1."""
    asking = await client.ws_connect("/ws?clientId=painter")
    plain = await client.ws_connect("/ws?clientId=painter")
    await asking.receive_json()
    await plain.receive_json()
    await asking.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    assert (await asking.receive_json())["data"]["supports_preview_metadata"] is True
    response = await client.post("/prompt", json={"prompt": PREVIEWING, "client_id": "painter"})
    prompt_id = (await response.json())["prompt_id"]
    with_metadata = [data for kind, data in await collect_until_done(asking, prompt_id) if kind == "binary"]
    without = [data for kind, data in await collect_until_done(plain, prompt_id) if kind == "binary"]
    assert len(with_metadata) == len(without) == 2
    event_type, length = struct.unpack(">II", with_metadata[0][:8])
    metadata = json.loads(with_metadata[0][8:8 + length])
    assert event_type == 4 and metadata == {"node_id": "2", "display_node_id": "2", "parent_node_id": None,
                                            "real_node_id": "2", "prompt_id": prompt_id, "image_type": "image/jpeg"}
    assert with_metadata[0][8 + length:] == without[0][8:]  # the same JPEG
    assert struct.unpack(">I", without[0][:4]) == (1,)
    await asking.close()
    await plain.close()


async def test_events_go_to_the_client_that_queued(client):
    mine = await client.ws_connect("/ws?clientId=mine")
    other = await client.ws_connect("/ws?clientId=other")
    await mine.receive_json()
    await other.receive_json()
    response = await client.post("/prompt", json={"prompt": PREVIEWING, "client_id": "mine"})
    prompt_id = (await response.json())["prompt_id"]
    await collect_until_done(mine, prompt_id)
    await wait_for_history(client, prompt_id)
    seen_by_other = []
    while True:
        try:
            message = await other.receive(timeout=0.2)
        except asyncio.TimeoutError:
            break
        seen_by_other.append(message.json()["type"] if message.type == WSMsgType.TEXT else "binary")
    assert set(seen_by_other) <= {"status"}
    await mine.close()
    await other.close()


async def test_previews_can_be_turned_off(make_client):
    client = await make_client(previews=False)
    socket = await client.ws_connect("/ws?clientId=me")
    await socket.receive_json()
    response = await client.post("/prompt", json={"prompt": PREVIEWING, "client_id": "me"})
    received = await collect_until_done(socket, (await response.json())["prompt_id"])
    kinds = [kind for kind, _ in received]
    assert "progress" in kinds and "binary" not in kinds
    await socket.close()


async def test_every_socket_of_a_client_id_gets_its_events(client):
    """The editor open in two tabs with one clientId: both follow the prompt, and closing one keeps the other."""
    first = await client.ws_connect("/ws?clientId=tabs")
    second = await client.ws_connect("/ws?clientId=tabs")
    await first.receive_json()
    await second.receive_json()
    response = await client.post("/prompt", json={"prompt": PREVIEWING, "client_id": "tabs"})
    prompt_id = (await response.json())["prompt_id"]
    seen_first = await collect_until_done(first, prompt_id)
    seen_second = await collect_until_done(second, prompt_id)
    assert seen_first == seen_second
    assert [kind for kind, _ in seen_first].count("executed") == 1
    assert [kind for kind, _ in seen_first].count("binary") == 2
    await first.close()
    response = await client.post("/prompt", json={"prompt": PREVIEWING, "client_id": "tabs"})
    prompt_id = (await response.json())["prompt_id"]
    kinds = [kind for kind, _ in await collect_until_done(second, prompt_id)]
    assert "executed" in kinds and kinds[-1] == "executing"
    await second.close()
