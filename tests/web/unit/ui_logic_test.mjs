// The DOM-free parts of the UI modules: number widgets, seed control, palette search, history, shortcuts.
import assert from "node:assert/strict";
import { test } from "node:test";

import { InputSpec } from "../../../web/js/node_defs.js";
import { searchNodes } from "../../../web/js/palette.js";
import { historyImages, historyOutcome } from "../../../web/js/queue_panel.js";
import { commandFor } from "../../../web/js/shortcuts.js";
import { normalizeNumber, valueAfterGenerate } from "../../../web/js/widgets.js";
import { stubDefs } from "./helpers.mjs";

const spec = (type, options, choices = null) => new InputSpec("x", "required", type, options, choices);

test("numbers are clamped to min/max, INTs snapped to their step, FLOATs rounded", () => {
  const width = spec("INT", { min: 16, max: 16384, step: 8 });
  assert.equal(normalizeNumber(width, "515"), 512);
  assert.equal(normalizeNumber(width, "3"), 16);
  assert.equal(normalizeNumber(width, "99999"), 16384);
  assert.equal(normalizeNumber(width, "abc"), null);
  const cfg = spec("FLOAT", { min: 0, max: 100, step: 0.1, round: 0.01 });
  assert.equal(normalizeNumber(cfg, "7.456"), 7.46);
  assert.equal(normalizeNumber(spec("FLOAT", { step: 0.01 }), 0.1 + 0.2), 0.3);
});

test("control after generate: fixed keeps, increment and decrement step within range, randomize draws", () => {
  const seed = spec("INT", { min: 0, max: 10 });
  assert.equal(valueAfterGenerate(seed, 5, "fixed"), 5);
  assert.equal(valueAfterGenerate(seed, 5, "increment"), 6);
  assert.equal(valueAfterGenerate(seed, 10, "increment"), 10);
  assert.equal(valueAfterGenerate(seed, 0, "decrement"), 0);
  assert.equal(valueAfterGenerate(seed, 5, "randomize", () => 0.5), 5);
  assert.equal(valueAfterGenerate(seed, 5, "randomize", () => 0.99), 9);
  const combo = spec("COMBO", {}, ["a", "b", "c"]);
  assert.equal(valueAfterGenerate(combo, "a", "increment"), "b");
  assert.equal(valueAfterGenerate(combo, "c", "increment-wrap"), "a");
});

test("palette search ranks exact and prefix matches first and filters by a dragged wire", () => {
  const defs = stubDefs().all();
  assert.equal(searchNodes(defs, "ksampler")[0].name, "KSampler");
  assert.equal(searchNodes(defs, "load checkpoint")[0].name, "CheckpointLoaderSimple");
  assert.deepEqual(searchNodes(defs, "zzz"), []);
  const takesImage = searchNodes(defs, "", { side: "output", type: "IMAGE" }).map((def) => def.name);
  assert.ok(takesImage.includes("SaveImage") && takesImage.includes("ImageInvert"));
  assert.ok(!takesImage.includes("KSampler"));
  const givesLatent = searchNodes(defs, "", { side: "input", type: "LATENT" }).map((def) => def.name);
  assert.deepEqual(givesLatent.sort(), ["EmptyLatentImage", "KSampler", "Reroute"].sort());
});

test("history entries: outcome and images", () => {
  const entry = { status: { status_str: "error", messages: [["execution_start", {}], ["execution_interrupted", {}]] },
    outputs: { 9: { images: [{ filename: "a.png" }] }, 3: { text: ["x"] } } };
  assert.equal(historyOutcome(entry), "interrupted");
  assert.equal(historyOutcome({ status: { status_str: "success", messages: [] } }), "success");
  assert.deepEqual(historyImages(entry), [{ filename: "a.png" }]);
});

test("shortcuts: Ctrl+Enter queues even while typing; plain keys only outside text fields", () => {
  const key = (k, mods = {}) => ({ key: k, ctrlKey: false, metaKey: false, shiftKey: false, altKey: false, ...mods });
  assert.equal(commandFor(key("Enter", { ctrlKey: true }), true), "queue");
  assert.equal(commandFor(key("Enter", { ctrlKey: true, shiftKey: true }), false), "queueFront");
  assert.equal(commandFor(key("z", { metaKey: true }), false), "undo");
  assert.equal(commandFor(key("Z", { ctrlKey: true, shiftKey: true }), false), "redo");
  assert.equal(commandFor(key("Delete"), false), "deleteSelected");
  assert.equal(commandFor(key("Delete"), true), null);
  assert.equal(commandFor(key("?", { shiftKey: true }), false), "help");
  assert.equal(commandFor(key("c"), false), null);
});
