import assert from "node:assert/strict";
import { test } from "node:test";

import { defaultWorkflow } from "../../../web/js/default_workflow.js";
import { Graph, GraphError, MODE_BYPASSED } from "../../../web/js/graph.js";
import { UndoStack } from "../../../web/js/undo.js";
import { engineFixture, stubDefs } from "./helpers.mjs";

function twoNodeGraph() {
  const graph = new Graph(stubDefs());
  const loader = graph.addNode(graph.createNode("CheckpointLoaderSimple", [0, 0]));
  const encode = graph.addNode(graph.createNode("CLIPTextEncode", [300, 0]));
  return { graph, loader, encode };
}

test("new nodes get sockets for every input, widget inputs marked, and default widget values", () => {
  const graph = new Graph(stubDefs());
  const sampler = graph.createNode("KSampler");
  assert.deepEqual(sampler.inputs.map((slot) => [slot.name, Boolean(slot.widget)]), [
    ["model", false], ["seed", true], ["steps", true], ["cfg", true], ["sampler_name", true], ["scheduler", true],
    ["positive", false], ["negative", false], ["latent_image", false], ["denoise", true]]);
  assert.deepEqual(sampler.widgets.map((widget) => widget.value), [0, "randomize", 20, 8, "euler", "normal", 1]);
  assert.deepEqual(sampler.outputs.map((slot) => slot.type), ["LATENT"]);
});

test("connect wires matching types and replaces an input's previous link", () => {
  const { graph, loader, encode } = twoNodeGraph();
  const clipSlot = encode.inputIndex("clip");
  const first = graph.connect(loader, 1, encode, clipSlot);
  assert.equal(first.type, "CLIP");
  const second = graph.connect(loader, 1, encode, clipSlot);
  assert.equal(graph.links.size, 1);
  assert.equal(encode.inputs[clipSlot].link, second.id);
  assert.deepEqual(loader.outputs[1].links, [second.id]);
});

test("an incompatible wire is refused with a reason naming both types", () => {
  const { graph, loader, encode } = twoNodeGraph();
  const check = graph.canConnect(loader, 0, encode, encode.inputIndex("clip"));
  assert.equal(check.ok, false);
  assert.match(check.reason, /MODEL cannot connect to CLIP/);
  assert.throws(() => graph.connect(loader, 0, encode, encode.inputIndex("clip")), GraphError);
  assert.equal(graph.links.size, 0);
});

test("a wire that would close a loop is refused", () => {
  const graph = new Graph(stubDefs());
  const a = graph.addNode(graph.createNode("ImageInvert"));
  const b = graph.addNode(graph.createNode("ImageInvert"));
  graph.connect(a, 0, b, 0);
  assert.match(graph.canConnect(b, 0, a, 0).reason, /loop/);
});

test("removing a node removes its links from both ends", () => {
  const { graph, loader, encode } = twoNodeGraph();
  graph.connect(loader, 1, encode, encode.inputIndex("clip"));
  graph.removeNode(loader.id);
  assert.equal(graph.links.size, 0);
  assert.equal(encode.inputs[encode.inputIndex("clip")].link, null);
});

test("editor files load and save back to the same nodes, links and widget values", () => {
  const file = engineFixture("txt2img_default.json");
  const graph = new Graph(stubDefs());
  graph.load(file);
  const saved = graph.serialize();
  assert.equal(saved.version, 0.4);
  assert.deepEqual(saved.links.map((link) => link.slice(0, 5)).sort(), file.links.map((link) => link.slice(0, 5)).sort());
  const sampler = saved.nodes.find((node) => node.type === "KSampler");
  assert.deepEqual(sampler.widgets_values, [156680208700286, "randomize", 20, 8, "euler", "normal", 1]);
  assert.deepEqual(sampler.pos, [863, 186]);
  const again = new Graph(stubDefs());
  again.load(saved);
  assert.deepEqual(again.serialize(), saved);
});

test("unknown node types, groups and extra keys survive a round trip untouched", () => {
  const file = engineFixture("txt2img_modern.json");
  file.nodes.push({ id: 99, type: "SomePluginNode", pos: [1, 2], size: [10, 10], mode: 0, inputs: [],
    outputs: [], widgets_values: [1, "two", { three: 3 }], custom_field: "kept" });
  const graph = new Graph(stubDefs());
  graph.load(file);
  const saved = graph.serialize();
  const plugin = saved.nodes.find((node) => node.id === 99);
  assert.deepEqual(plugin.widgets_values, [1, "two", { three: 3 }]);
  assert.equal(plugin.custom_field, "kept");
  assert.deepEqual(saved.groups, file.groups);
  assert.deepEqual(saved.extra, file.extra);
  assert.equal(saved.id, file.id);
});

test("old files without control values are saved in the current layout", () => {
  const graph = new Graph(stubDefs());
  graph.load({ nodes: [{ id: 1, type: "KSampler", pos: [0, 0], inputs: [], outputs: [],
    widgets_values: [5, 20, 8, "euler", "normal", 1] }], links: [] });
  assert.deepEqual(graph.serialize().nodes[0].widgets_values, [5, "randomize", 20, 8, "euler", "normal", 1]);
});

test("links to missing nodes are dropped on load", () => {
  const graph = new Graph(stubDefs());
  graph.load({ nodes: [{ id: 1, type: "ImageInvert", inputs: [{ name: "image", type: "IMAGE", link: 5 }], outputs: [] }],
    links: [[5, 42, 0, 1, 0, "IMAGE"]] });
  assert.equal(graph.links.size, 0);
  assert.equal(graph.getNode(1).inputs[0].link, null);
});

test("a primitive adopts the widget it feeds, and only feeds widgets", () => {
  const graph = new Graph(stubDefs());
  const primitive = graph.addNode(graph.createNode("PrimitiveNode"));
  const sampler = graph.addNode(graph.createNode("KSampler"));
  assert.equal(graph.canConnect(primitive, 0, sampler, sampler.inputIndex("model")).ok, false);
  graph.connect(primitive, 0, sampler, sampler.inputIndex("seed"));
  assert.equal(graph.outputType(primitive, 0), "INT");
  assert.deepEqual(primitive.widgets.map((widget) => widget.kind), ["widget", "control"]);
});

test("a reroute carries the type of what feeds it", () => {
  const { graph, loader, encode } = twoNodeGraph();
  const reroute = graph.addNode(graph.createNode("Reroute"));
  graph.connect(loader, 1, reroute, 0);
  assert.equal(graph.outputType(reroute, 0), "CLIP");
  assert.ok(graph.canConnect(reroute, 0, encode, encode.inputIndex("clip")).ok);
  const sampler = graph.addNode(graph.createNode("KSampler"));
  assert.equal(graph.canConnect(reroute, 0, sampler, sampler.inputIndex("model")).ok, false);
});

test("copy and paste duplicates nodes with their internal links and new ids", () => {
  const { graph, loader, encode } = twoNodeGraph();
  graph.connect(loader, 1, encode, encode.inputIndex("clip"));
  const clip = graph.copy([loader.id, encode.id]);
  const pasted = graph.paste(JSON.parse(JSON.stringify(clip)), [1000, 1000]);
  assert.equal(pasted.length, 2);
  assert.deepEqual(pasted.map((node) => node.id), [3, 4]);
  assert.equal(graph.links.size, 2);
  assert.deepEqual(pasted[0].pos, [1000, 1000]);
});

test("paste with input links keeps wires from nodes outside the copy", () => {
  const { graph, loader, encode } = twoNodeGraph();
  graph.connect(loader, 1, encode, encode.inputIndex("clip"));
  const clip = graph.copy([encode.id]);
  graph.paste(clip, [0, 300]);
  assert.equal(graph.links.size, 1);
  graph.paste(clip, [0, 600], { keepInputLinks: true });
  assert.equal(graph.links.size, 2);
});

test("the default workflow has the seven ComfyUI nodes wired and a real checkpoint selected", () => {
  const workflow = defaultWorkflow(stubDefs());
  assert.deepEqual(workflow.nodes.map((node) => node.type).sort(), ["CLIPTextEncode", "CLIPTextEncode",
    "CheckpointLoaderSimple", "EmptyLatentImage", "KSampler", "SaveImage", "VAEDecode"]);
  assert.equal(workflow.links.length, 9);
  const loader = workflow.nodes.find((node) => node.type === "CheckpointLoaderSimple");
  assert.deepEqual(loader.widgets_values, ["v1-5-pruned-emaonly.safetensors"]);
});

test("mode changes are saved, and a change event is sent for each change", () => {
  const { graph, loader } = twoNodeGraph();
  const seen = [];
  graph.addEventListener("change", (event) => seen.push(event.detail.what));
  graph.setMode(loader, MODE_BYPASSED);
  graph.setWidgetValue(loader, "ckpt_name", "sd_xl_base_1.0.safetensors");
  assert.deepEqual(seen, ["node", "widget"]);
  assert.equal(graph.serialize().nodes[0].mode, MODE_BYPASSED);
});

test("undo and redo walk through recorded states", () => {
  const stack = new UndoStack(3);
  stack.reset("a");
  stack.record("b");
  stack.record("b");
  stack.record("c");
  assert.equal(stack.undo(), "b");
  assert.equal(stack.undo(), "a");
  assert.equal(stack.undo(), null);
  assert.equal(stack.redo(), "b");
  stack.record("d");
  assert.equal(stack.redo(), null);
  stack.record("e");
  stack.record("f");
  assert.equal(stack.undo(), "e");
  assert.equal(stack.undo(), "d");
  assert.equal(stack.undo(), null);
});
