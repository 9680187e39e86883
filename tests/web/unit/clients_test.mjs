// The API client, the websocket client, PNG text chunks and the extension loader, with stand-ins for the network.
import assert from "node:assert/strict";
import { test } from "node:test";
import { deflateSync } from "node:zlib";

import { ApiClient, ApiError } from "../../../web/js/api.js";
import { ExtensionRegistry, loadExtensions } from "../../../web/js/extensions.js";
import { PngError, readPngText, workflowFromPng } from "../../../web/js/png.js";
import { SocketClient } from "../../../web/js/socket.js";

function fakeFetch(responses) {
  const calls = [];
  const fetchImpl = async (url, init) => {
    calls.push({ url, init });
    const [status, body] = responses.shift();
    return { ok: status < 400, status, text: async () => JSON.stringify(body) };
  };
  return { calls, fetchImpl };
}

test("queuePrompt sends the API prompt, the client id and the editor workflow as extra_pnginfo", async () => {
  const { calls, fetchImpl } = fakeFetch([[200, { prompt_id: "p", number: 1, node_errors: {} }]]);
  const api = new ApiClient({ fetchImpl, token: "secret" });
  const answer = await api.queuePrompt({ prompt: { 1: {} }, workflow: { nodes: [] }, clientId: "c", front: true });
  assert.equal(answer.prompt_id, "p");
  assert.equal(calls[0].url, "/prompt");
  assert.equal(calls[0].init.headers.Authorization, "Bearer secret");
  assert.deepEqual(JSON.parse(calls[0].init.body), { prompt: { 1: {} }, client_id: "c", front: true,
    extra_data: { extra_pnginfo: { workflow: { nodes: [] } } } });
});

test("a 400 becomes an ApiError carrying the validation body", async () => {
  const body = { error: { type: "prompt_outputs_failed_validation", message: "Prompt outputs failed validation" },
    node_errors: { 4: { errors: [] } } };
  const { fetchImpl } = fakeFetch([[400, body]]);
  const error = await new ApiClient({ fetchImpl }).queuePrompt({ prompt: {}, workflow: {}, clientId: "c" }).catch((e) => e);
  assert.ok(error instanceof ApiError);
  assert.equal(error.status, 400);
  assert.equal(error.message, "Prompt outputs failed validation");
  assert.deepEqual(error.body.node_errors, body.node_errors);
});

test("no /extensions route means no extensions; view URLs carry the token", async () => {
  const { fetchImpl } = fakeFetch([[404, { error: { message: "Not Found" } }]]);
  const api = new ApiClient({ fetchImpl, token: "t" });
  assert.deepEqual(await api.extensions(), []);
  assert.equal(api.viewUrl({ filename: "a b.png", subfolder: "s", type: "output" }),
    "/view?filename=a+b.png&subfolder=s&type=output&token=t");
});

class FakeSocket extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.sent = [];
    FakeSocket.last = this;
  }

  send(data) {
    this.sent.push(data);
  }

  close() {}
}

test("the socket client re-dispatches JSON messages and binary preview frames", async () => {
  const client = new SocketClient({ url: "ws://x/ws?clientId=c", WebSocketImpl: FakeSocket });
  const seen = [];
  client.addEventListener("progress", (event) => seen.push(["progress", event.detail]));
  client.addEventListener("preview", (event) => seen.push(["preview", event.detail]));
  client.connect();
  FakeSocket.last.dispatchEvent(new Event("open"));
  assert.match(FakeSocket.last.sent[0], /feature_flags/);
  const message = new Event("message");
  message.data = JSON.stringify({ type: "progress", data: { value: 1, max: 2, node: "3" } });
  FakeSocket.last.dispatchEvent(message);
  const frame = new Uint8Array([0, 0, 0, 1, 0, 0, 0, 2, 137, 80]);
  const binary = new Event("message");
  binary.data = frame.buffer;
  FakeSocket.last.dispatchEvent(binary);
  assert.deepEqual(seen[0], ["progress", { value: 1, max: 2, node: "3" }]);
  assert.equal(seen[1][1].type, "image/png");
  assert.deepEqual([...new Uint8Array(await seen[1][1].arrayBuffer())], [137, 80]);
  client.close();
});

function chunk(type, data) {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  return Buffer.concat([length, Buffer.from(type, "latin1"), data, Buffer.alloc(4)]);
}

function png(...chunks) {
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), ...chunks, chunk("IEND", Buffer.alloc(0))]);
}

test("PNG text chunks are read whether plain, compressed or international", async () => {
  const file = png(
    chunk("IHDR", Buffer.alloc(13)),
    chunk("tEXt", Buffer.from("prompt\0{\"1\":{\"class_type\":\"A\"}}", "latin1")),
    chunk("zTXt", Buffer.concat([Buffer.from("note\0\0", "latin1"), deflateSync(Buffer.from("squeezed"))])),
    chunk("iTXt", Buffer.concat([Buffer.from("workflow\0\0\0\0\0", "latin1"), Buffer.from("{\"nodes\":[],\"title\":\"é\"}")])),
    chunk("iTXt", Buffer.concat([Buffer.from("packed\0\x01\0en\0\0", "latin1"), deflateSync(Buffer.from("ü"))])),
  );
  const texts = await readPngText(file);
  assert.equal(texts.note, "squeezed");
  assert.equal(texts.packed, "ü");
  assert.deepEqual(await workflowFromPng(file), { workflow: { nodes: [], title: "é" } });
  const promptOnly = png(chunk("tEXt", Buffer.from("prompt\0{\"1\":{\"class_type\":\"A\"}}", "latin1")));
  assert.deepEqual(await workflowFromPng(promptOnly), { prompt: { 1: { class_type: "A" } } });
  await assert.rejects(readPngText(Buffer.from("GIF89a")), PngError);
});

test("extension modules register widgets, menu items and hooks; a broken one is reported and skipped", async () => {
  const reported = [];
  const app = { reportExtensionError: (...args) => reported.push(args), toast() {}, extensionsChanged() {} };
  const registry = new ExtensionRegistry(app);
  const modules = {
    "/extensions/a/good.js": { default(editor) {
      editor.registerWidget({ name: "color", matches: (type, input) => input === "color", create() {} });
      editor.addNodeMenuItem({ label: "Hello", matches: (node) => node.type === "X", action() {} });
      editor.onNodeCreated(() => { throw new Error("drawing failed"); });
    } },
    "/extensions/b/object.js": { default: { setup(editor) { editor.beforeQueue((request) => { request.prompt.touched = true; }); } } },
    "/extensions/c/broken.js": { default: 42 },
  };
  const failures = await loadExtensions(Object.keys(modules), registry, async (url) => modules[url]);
  assert.deepEqual(failures.map((failure) => failure.url), ["/extensions/c/broken.js"]);
  assert.equal(registry.widgetFor("Any", "color", null).name, "color");
  assert.equal(registry.widgetFor("Any", "text", null), null);
  assert.deepEqual(registry.nodeMenuItems({ type: "X" }).map((item) => item.label), ["Hello"]);
  assert.deepEqual(registry.nodeMenuItems({ type: "Y" }), []);
  registry.nodeCreated({});
  assert.equal(reported.length, 1);
  const request = { prompt: {} };
  await registry.beforeQueue(request);
  assert.ok(request.prompt.touched);
});
