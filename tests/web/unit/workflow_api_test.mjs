import assert from "node:assert/strict";
import { test } from "node:test";

import { defaultWorkflow } from "../../../web/js/default_workflow.js";
import { Graph } from "../../../web/js/graph.js";
import { apiToEditor, editorToApi, isApiFormat, WorkflowFormatError } from "../../../web/js/workflow_api.js";
import { CASES } from "./conversion_cases.mjs";
import { stubDefs } from "./helpers.mjs";

test("the default ComfyUI file converts to the API prompt ComfyUI sends", () => {
  const api = editorToApi(CASES.default(), stubDefs());
  assert.deepEqual(Object.keys(api).sort(), ["3", "4", "5", "6", "7", "8", "9"]);
  assert.deepEqual(api["3"].inputs, { seed: 156680208700286, steps: 20, cfg: 8, sampler_name: "euler",
    scheduler: "normal", denoise: 1, model: ["4", 0], positive: ["6", 0], negative: ["7", 0], latent_image: ["5", 0] });
  assert.deepEqual(api["9"], { class_type: "SaveImage", inputs: { filename_prefix: "ComfyUI", images: ["8", 0] },
    _meta: { title: "Save Image" } });
});

test("reroutes pass through, primitives feed widgets, bypassed and muted nodes are left out", () => {
  const api = editorToApi(CASES.modern(), stubDefs());
  assert.equal(api["3"].inputs.seed, 42);
  assert.deepEqual(api["3"].inputs.model, ["4", 0]);
  assert.deepEqual(api["8"].inputs.vae, ["4", 2]);
  assert.ok(!("10" in api) && !("16" in api) && !("11" in api) && !("14" in api));
  assert.equal(api["6"]._meta.title, "Positive Prompt");
});

test("a bypassed node is replaced by its input of the wanted type", () => {
  const api = editorToApi(CASES.bypassByType(), stubDefs());
  assert.deepEqual(api["4"].inputs.images, ["5", 0]);
});

test("list constants are boxed, dict widget values and missing ones get defaults", () => {
  const api = editorToApi(CASES.listConstantAndDictWidgets(), stubDefs());
  assert.deepEqual(api["1"].inputs.tags, { __value__: ["a", "b"] });
  assert.deepEqual(api["2"].inputs, { width: 64, batch_size: 2, height: 512 });
  assert.deepEqual(api["3"].inputs, { choice: "b", count: 4 });
  assert.deepEqual(api["4"].inputs, { image: "mask.png", frame: 3 });
  assert.deepEqual(api["5"].inputs, { image: "mask.png", frame: 2 });
});

test("malformed workflows are refused with the node named", () => {
  assert.throws(() => editorToApi(CASES.errorMissingLink(), stubDefs()), /node 1 \(ImageInvert\).*link 3/);
  assert.throws(() => editorToApi(CASES.errorRerouteLoop(), stubDefs()), /loop/);
  assert.throws(() => editorToApi({ links: [] }, stubDefs()), WorkflowFormatError);
});

test("subgraph workflows are left to the server", () => {
  const workflow = { nodes: [], links: [], definitions: { subgraphs: [{ id: "x", nodes: [] }] } };
  assert.throws(() => editorToApi(workflow, stubDefs()), (error) => error.needsServer === true);
});

test("an API prompt laid out as an editor graph converts back to the same prompt", () => {
  const defs = stubDefs();
  const prompt = editorToApi(defaultWorkflow(defs), defs);
  const editor = apiToEditor(prompt, defs);
  assert.equal(editor.nodes.length, 7);
  assert.deepEqual(editorToApi(editor, defs), prompt);
  const columns = new Set(editor.nodes.map((node) => node.pos[0]));
  assert.ok(columns.size >= 4, "nodes are laid out in columns by depth");
});

test("API prompts are told apart from editor files", () => {
  assert.ok(isApiFormat({ 1: { class_type: "A", inputs: {} } }));
  assert.ok(!isApiFormat({ nodes: [], links: [] }));
  assert.ok(!isApiFormat({}));
});

test("the graph's saved workflow converts like the file it was loaded from", () => {
  const defs = stubDefs();
  const graph = new Graph(defs);
  graph.load(CASES.modern());
  assert.deepEqual(editorToApi(graph.serialize(), defs), editorToApi(CASES.modern(), defs));
});
