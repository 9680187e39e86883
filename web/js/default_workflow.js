/**
 * The graph a first visit opens with: ComfyUI's default text-to-image workflow (checkpoint loader, two text
 * encoders, empty latent, sampler, decode, save), laid out as ComfyUI lays it out.
 *
 * Built through the graph model from the server's node definitions, so it always matches them; with a
 * catalogue that lacks these nodes it is an empty graph. Knows nothing of the DOM or the server.
 */
import { Graph } from "./graph.js";

const DEMO_NAME = /^(tiny-|demo)/i;

/** The checkpoint the default graph selects: the first real model, else the first (demo) one. */
function preferredCheckpoint(names) {
  return names.find((name) => !DEMO_NAME.test(baseName(name))) ?? names[0];
}

/** Whether a model file name is one of the random-weight demo models (`python main.py make-demo-models`). */
export function isDemoModel(name) {
  return typeof name === "string" && DEMO_NAME.test(baseName(name));
}

function baseName(name) {
  return String(name).split("/").pop();
}

const LAYOUT = [
  { id: 4, type: "CheckpointLoaderSimple", pos: [26, 474], width: 315 },
  { id: 6, type: "CLIPTextEncode", pos: [415, 186], width: 422,
    text: "beautiful scenery nature glass bottle landscape, , purple galaxy bottle," },
  { id: 7, type: "CLIPTextEncode", pos: [413, 389], width: 425, text: "text, watermark" },
  { id: 5, type: "EmptyLatentImage", pos: [473, 609], width: 315 },
  { id: 3, type: "KSampler", pos: [863, 186], width: 315 },
  { id: 8, type: "VAEDecode", pos: [1209, 188], width: 210 },
  { id: 9, type: "SaveImage", pos: [1451, 189], width: 315 },
];

const WIRES = [
  [4, 0, 3, "model"], [6, 0, 3, "positive"], [7, 0, 3, "negative"], [5, 0, 3, "latent_image"],
  [4, 1, 6, "clip"], [4, 1, 7, "clip"], [3, 0, 8, "samples"], [4, 2, 8, "vae"], [8, 0, 9, "images"],
];

/** The default workflow in editor format; `defs` is a NodeDefs. */
export function defaultWorkflow(defs) {
  const graph = new Graph(defs);
  if (!LAYOUT.every((entry) => defs.has(entry.type))) return graph.serialize();
  for (const entry of LAYOUT) {
    const node = graph.createNode(entry.type, entry.pos);
    node.id = entry.id;
    node.size = [entry.width, node.size[1]];
    if (entry.text !== undefined) node.widget("text").value = entry.text;
    graph.addNode(node);
  }
  const checkpoints = defs.get("CheckpointLoaderSimple").input("ckpt_name")?.choices ?? [];
  const loader = graph.getNode(4);
  if (checkpoints.length) loader.widget("ckpt_name").value = preferredCheckpoint(checkpoints);
  const sampler = graph.getNode(3);
  const seed = sampler.widget("seed");
  if (seed) seed.value = Math.floor(Math.random() * 1e15);
  for (const [originId, originSlot, targetId, inputName] of WIRES) {
    const target = graph.getNode(targetId);
    graph.connect(graph.getNode(originId), originSlot, target, target.inputIndex(inputName));
  }
  return graph.serialize();
}
