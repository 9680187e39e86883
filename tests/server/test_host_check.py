"""DNS rebinding: requests for a Host the server was not started for are refused on every route, the websocket
and plugin routes; loopback names, the listen address, `--allow-host` names and (beyond loopback) IPs pass."""
import asyncio
import concurrent.futures
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from main import build_parser
from serve import serve
from server.app import ServerConfig, create_app
from server.plugin_api import PromptServer
from server.security import HostRule, host_name
from tests.server.conftest import ready_runtime

CHAIN = {"1": {"class_type": "Const", "inputs": {"value": 2}},
         "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}


def rebinding(client, name="evil.example"):
    """The headers a browser sends from a page whose DNS name was made to resolve to this server."""
    return {"Host": f"{name}:{client.port}", "Origin": f"http://{name}:{client.port}"}


@pytest.mark.parametrize("method, path", [("GET", "/queue"), ("POST", "/prompt"), ("GET", "/view?filename=a.png"),
                                          ("GET", "/object_info"), ("GET", "/"), ("GET", "/web/js/main.js"),
                                          ("GET", "/api/history"), ("GET", "/no/such/route")])
async def test_a_rebound_name_is_refused_before_any_handler(client, method, path):
    response = await client.request(method, path, json={"prompt": CHAIN}, headers=rebinding(client))
    body = await response.json()
    assert response.status == 403 and body["error"]["type"] == "forbidden"
    assert "--allow-host evil.example" in body["error"]["message"]
    assert (await (await client.get("/queue")).json())["queue_pending"] == []


async def test_a_rebound_name_gets_no_websocket(client):
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws?clientId=x", headers=rebinding(client))
    assert refused.value.status == 403


async def test_a_rebound_name_is_refused_with_an_auth_token_too(make_client):
    client = await make_client(auth_token="s3cret")
    token = {"Authorization": "Bearer s3cret"}
    assert (await client.get("/queue", headers={**rebinding(client), **token})).status == 403
    assert (await client.get("/queue", headers=token)).status == 200
    assert (await client.get("/queue", headers={"Host": f"localhost:{client.port}"})).status == 401


async def test_plugin_routes_get_the_same_protection(settings):
    future: concurrent.futures.Future = concurrent.futures.Future()
    app = create_app(settings, ServerConfig(), future)

    @PromptServer.instance.routes.get("/my-pack/secret")
    async def secret(request):
        return web.json_response({"secret": 42})

    future.set_result(ready_runtime(settings).result())
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        assert await (await client.get("/my-pack/secret")).json() == {"secret": 42}
        assert (await client.get("/my-pack/secret", headers=rebinding(client))).status == 403
    finally:
        await client.close()


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "127.0.0.1", "127.3.4.5", "[::1]",
                                  "[0:0:0:0:0:0:0:1]"])
async def test_loopback_names_are_served(client, host):
    response = await client.get("/queue", headers={"Host": f"{host}:{client.port}"})
    assert response.status == 200, await response.text()
    assert (await client.get("/queue", headers={"Host": host})).status == 200


async def test_a_request_without_a_host_header_is_no_browser_and_is_served(client):
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /queue HTTP/1.0\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.0 200")
    writer.close()


async def test_allowed_hosts_are_served(make_client):
    client = await make_client(hosts=HostRule.for_listen("127.0.0.1", ["comfy.home.arpa", "NAS.lan."]))
    for name in ("comfy.home.arpa", "nas.lan"):
        response = await client.get("/queue", headers=rebinding(client, name))
        assert response.status == 200, await response.text()
    websocket = await client.ws_connect("/ws?clientId=x", headers=rebinding(client, "nas.lan"))
    assert (await websocket.receive_json())["type"] == "status"
    await websocket.close()
    assert (await client.get("/queue", headers=rebinding(client, "other.lan"))).status == 403


async def test_listening_beyond_loopback_serves_ip_addresses_and_this_machines_name(make_client):
    client = await make_client(hosts=HostRule.for_listen("0.0.0.0"))
    machine = socket.gethostname().lower().split(".")[0]
    for name in ("192.168.1.20", "[fe80::1]", "10.0.0.5", machine, f"{machine}.local", "localhost"):
        assert (await client.get("/queue", headers={"Host": f"{name}:{client.port}"})).status == 200, name
    assert (await client.get("/queue", headers=rebinding(client))).status == 403
    assert (await client.get("/queue", headers=rebinding(client, "192.168.1.20.nip.io"))).status == 403


def test_host_rules():
    loopback = HostRule.for_listen("127.0.0.1")
    assert loopback.allows("localhost") and loopback.allows("::1") and loopback.allows("127.0.0.1")
    assert not loopback.allows("192.168.1.20") and not loopback.allows("evil.example")
    assert not loopback.allows(socket.gethostname().lower())
    lan = HostRule.for_listen("192.168.1.20", ["pc.example"])
    assert lan.allows("192.168.1.20") and lan.allows("203.0.113.7") and lan.allows("pc.example")
    assert not lan.allows("evil.example")
    assert HostRule.for_listen("::").allows("2001:db8::1")
    by_name = HostRule.for_listen("localhost")
    assert by_name.allows("127.0.0.1") and not by_name.allows("192.168.1.20")
    assert HostRule.for_listen("::1").allows("localhost")
    with pytest.raises(ValueError):
        HostRule.for_listen("127.0.0.1", ["not a name"])


@pytest.mark.parametrize("header, name", [("Example.COM.:80", "example.com"), ("[::1]:8188", "::1"),
                                          ("127.0.0.1", "127.0.0.1"), ("[0::1]", "::1"), ("x:99999", None),
                                          ("x:abc", None), ("a b", None), ("u@x", None), ("[::1", None),
                                          ("", None), (".", None), ("x:", None)])
def test_host_header_parsing(header, name):
    assert host_name(header) == name


def test_allow_host_flag_is_repeatable_and_checked(settings):
    parser = build_parser()
    args = parser.parse_args(["--allow-host", "nas.lan", "--allow-host", "[::2]"])
    assert args.allow_host == ["nas.lan", "[::2]"]
    assert "--allow-host NAME" in parser.format_help()
    bad = parser.parse_args(["--allow-host", "two words"])
    with pytest.raises(SystemExit, match="--allow-host"):
        serve(settings, bad)
