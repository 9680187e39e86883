import assert from "node:assert/strict";
import { test } from "node:test";

import { InputSpec, chooseLayout, mapWidgetValues, typesCompatible, widgetLayout } from "../../../web/js/node_defs.js";
import { stubDefs } from "./helpers.mjs";

test("input specs parse the three combo spellings and plain types", () => {
  assert.deepEqual(InputSpec.parse("a", "required", [["x", "y"]]).choices, ["x", "y"]);
  const combo = InputSpec.parse("b", "required", ["COMBO", { options: ["p"], default: "p" }]);
  assert.equal(combo.type, "COMBO");
  assert.deepEqual(combo.choices, ["p"]);
  assert.equal(InputSpec.parse("c", "hidden", "PROMPT").type, "PROMPT");
  assert.throws(() => InputSpec.parse("d", "required", []));
});

test("widgets are the widget-typed, non-hidden inputs without forceInput, in declaration order", () => {
  const defs = stubDefs();
  assert.deepEqual(defs.get("MixedInputs").widgetSpecs.map((spec) => spec.name),
    ["scale", "offset", "label", "toggle"]);
  assert.deepEqual(defs.get("KSampler").widgetSpecs.map((spec) => spec.name),
    ["seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"]);
});

test("the stored layout puts controls after seeds and the upload value after required widgets", () => {
  const defs = stubDefs();
  assert.deepEqual(widgetLayout(defs.get("KSampler").widgetSpecs).map((place) => place.kind),
    ["widget", "control", "widget", "widget", "widget", "widget", "widget"]);
  assert.deepEqual(widgetLayout(defs.get("LoadImageFrame").widgetSpecs).map((place) => place.kind),
    ["widget", "upload", "widget"]);
  assert.deepEqual(widgetLayout(defs.get("ComboWithControl").widgetSpecs).map((place) => place.kind),
    ["widget", "control", "filter", "widget"]);
});

test("a layout is chosen to fit old files without control values", () => {
  const specs = stubDefs().get("KSampler").widgetSpecs;
  const oldFile = [5, 20, 8, "euler", "normal", 1];
  assert.equal(chooseLayout(specs, oldFile).length, 6);
  assert.deepEqual(mapWidgetValues(specs, oldFile), { seed: 5, steps: 20, cfg: 8, sampler_name: "euler",
    scheduler: "normal", denoise: 1 });
  assert.equal(mapWidgetValues(specs, [5, "fixed", 30, 8, "euler", "normal", 1]).steps, 30);
});

test("missing widget values get defaults; combos their first choice", () => {
  const specs = stubDefs().get("KSampler").widgetSpecs;
  assert.deepEqual(mapWidgetValues(specs, [7]), { seed: 7, steps: 20, cfg: 8, sampler_name: "euler",
    scheduler: "normal", denoise: 1 });
  assert.deepEqual(mapWidgetValues(specs, { steps: 3 }).steps, 3);
});

test("type compatibility: wildcards, unions and mismatches", () => {
  assert.ok(typesCompatible("IMAGE", "IMAGE"));
  assert.ok(typesCompatible("*", "LATENT"));
  assert.ok(typesCompatible("MASK", "IMAGE,MASK"));
  assert.ok(!typesCompatible("IMAGE", "LATENT"));
});
