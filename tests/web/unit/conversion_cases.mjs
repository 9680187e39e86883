// Editor workflows for the conversion tests: the engine's realistic fixtures plus small graphs for each rule.
// The JS unit tests check some results by hand; tests/web/test_conversion_parity.py checks every case
// against the server's converter.
import { engineFixture } from "./helpers.mjs";

function node(id, type, { inputs = [], outputs = [], widgets, mode = 0, title } = {}) {
  const entry = { id, type, pos: [0, 0], size: [200, 100], flags: {}, mode, inputs, outputs };
  if (widgets !== undefined) entry.widgets_values = widgets;
  if (title) entry.title = title;
  return entry;
}

const input = (name, type, link = null, widget = false) => ({ name, type, link, ...(widget ? { widget: { name } } : {}) });
const output = (name, type, links = []) => ({ name, type, links });

export const CASES = {
  default: () => engineFixture("txt2img_default.json"),
  modern: () => engineFixture("txt2img_modern.json"),
  bypassByType: () => ({
    nodes: [
      node(1, "LoadImage", { outputs: [output("IMAGE", "IMAGE", [1]), output("MASK", "MASK", [])], widgets: ["example.png", "image"] }),
      node(2, "MixedInputs", { mode: 4, inputs: [input("value", "INT"), input("anything", "IMAGE,MASK", 1)],
        outputs: [output("INT", "INT", [])], widgets: [1.0, 0, "", true] }),
      node(3, "ImageInvert", { mode: 4, inputs: [input("image", "IMAGE", 2)], outputs: [output("IMAGE", "IMAGE", [3])] }),
      node(4, "SaveImage", { inputs: [input("images", "IMAGE", 3)], widgets: ["out"] }),
      node(5, "ImageInvert", { inputs: [input("image", "IMAGE", 1)], outputs: [output("IMAGE", "IMAGE", [2])] }),
    ],
    links: [[1, 1, 0, 5, 0, "IMAGE"], [2, 5, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"]],
  }),
  mutedSource: () => ({
    nodes: [
      node(1, "CheckpointLoaderSimple", { mode: 2, outputs: [output("MODEL", "MODEL"), output("CLIP", "CLIP", [1])], widgets: ["tiny-sd1.safetensors"] }),
      node(2, "CLIPTextEncode", { inputs: [input("clip", "CLIP", 1)], outputs: [output("CONDITIONING", "CONDITIONING")], widgets: ["hi"] }),
    ],
    links: [[1, 1, 1, 2, 0, "CLIP"]],
  }),
  setGet: () => ({
    nodes: [
      node(1, "CheckpointLoaderSimple", { outputs: [output("MODEL", "MODEL"), output("CLIP", "CLIP", [1])], widgets: ["tiny-sd1.safetensors"] }),
      node(2, "SetNode", { inputs: [input("CLIP", "CLIP", 1)], outputs: [output("*", "*")], widgets: ["clip"] }),
      node(3, "GetNode", { outputs: [output("CLIP", "CLIP", [2])], widgets: ["clip"] }),
      node(4, "CLIPTextEncode", { inputs: [input("clip", "CLIP", 2)], widgets: ["text"] }),
    ],
    links: [[1, 1, 1, 2, 0, "CLIP"], [2, 3, 0, 4, 0, "CLIP"]],
  }),
  listConstantAndDictWidgets: () => ({
    nodes: [
      node(1, "TagList", { widgets: [["a", "b"]] }),
      node(2, "EmptyLatentImage", { widgets: { width: 64, batch_size: 2 } }),
      node(3, "ComboWithControl", { widgets: ["b", "randomize", "", 4] }),
      node(4, "LoadImageFrame", { widgets: ["mask.png", "image", 3] }),
      node(5, "LoadImageFrame", { widgets: ["mask.png", 2] }),
    ],
    links: [],
  }),
  primitiveIntoWidget: () => ({
    nodes: [
      node(1, "PrimitiveNode", { outputs: [{ ...output("INT", "INT", [1]), widget: { name: "steps" } }], widgets: [7, "fixed"] }),
      node(2, "KSampler", { inputs: [input("steps", "INT", 1, true)], widgets: [1, "fixed", 20, 8, "euler", "normal", 1], title: "Mine" }),
      node(3, "Note", { widgets: ["a note"] }),
      node(4, "SomePluginNode", { inputs: [input("x", "INT", null)], widgets: [1, 2] }),
    ],
    links: [[1, 1, 0, 2, 0, "INT"]],
  }),
  objectLinks: () => ({
    nodes: [
      node(1, "ImageInvert", { outputs: [output("IMAGE", "IMAGE", [8])] }),
      node(2, "ImageInvert", { inputs: [input("image", "IMAGE", 8)] }),
    ],
    links: [{ id: 8, origin_id: 1, origin_slot: 0, target_id: 2, target_slot: 0, type: "IMAGE" }],
  }),
  errorMissingLink: () => ({ nodes: [node(1, "ImageInvert", { inputs: [input("image", "IMAGE", 3)] })], links: [] }),
  errorRerouteLoop: () => ({
    nodes: [
      node(1, "Reroute", { inputs: [input("", "*", 2)], outputs: [output("", "*", [1])] }),
      node(2, "Reroute", { inputs: [input("", "*", 1)], outputs: [output("", "*", [2, 3])] }),
      node(3, "ImageInvert", { inputs: [input("image", "IMAGE", 3)] }),
    ],
    links: [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 2, 0, 3, 0, "*"]],
  }),
  errorMissingSetter: () => ({
    nodes: [node(1, "GetNode", { outputs: [output("X", "*", [1])], widgets: ["nothing"] }),
      node(2, "ImageInvert", { inputs: [input("image", "IMAGE", 1)] })],
    links: [[1, 1, 0, 2, 0, "IMAGE"]],
  }),
  errorBadMode: () => ({ nodes: [node(1, "ImageInvert", { mode: "always" })] }),
};
