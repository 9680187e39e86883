/**
 * Converting between the editor format (what the canvas saves) and the API format (what POST /prompt runs).
 *
 * `editorToApi` mirrors the rules of the server's `engine/workflow_format.py` for graphs without subgraphs:
 * widget values by name (positional `widgets_values`, with the control-after-generate and upload extras the
 * editor stores), links, muted (left out) and bypassed (passed through by type) nodes, reroutes, primitives,
 * SetNode/GetNode pairs, notes dropped, list constants boxed as `{"__value__": [...]}`. A workflow that uses
 * subgraphs raises `WorkflowFormatError` with `needsServer` set: the editor then sends the editor format and
 * lets the server convert it. `apiToEditor` lays out an API-format prompt as an editor graph.
 *
 * Pure functions of their arguments: no DOM, no server.
 */
import { Graph, GraphError, MODE_BYPASSED, MODE_MUTED } from "./graph.js";
import { mapWidgetValues, typesCompatible } from "./node_defs.js";

const PASS_THROUGH_NODES = new Set(["Reroute", "Reroute (rgthree)", "SetNode"]);
const CONSTANT_NODES = new Set(["PrimitiveNode"]);
const NAMED_GETTER_NODES = { GetNode: "SetNode" };
const ANNOTATION_NODES = new Set([
  "Note", "MarkdownNote", "Label (rgthree)", "Bookmark (rgthree)", "Fast Groups Muter (rgthree)",
  "Fast Groups Bypasser (rgthree)", "Fast Muter (rgthree)", "Fast Bypasser (rgthree)",
]);
const VIRTUAL_NODES = new Set([...PASS_THROUGH_NODES, ...CONSTANT_NODES, ...Object.keys(NAMED_GETTER_NODES),
  ...ANNOTATION_NODES]);
const LEGACY_GROUP_NODE_PREFIXES = ["workflow>", "workflow/"];

export class WorkflowFormatError extends Error {
  constructor(message, { needsServer = false } = {}) {
    super(message);
    this.needsServer = needsServer;
  }
}

// ---- editor -> API -------------------------------------------------------------------------------------

/** The API-format prompt for an editor workflow; `defs` is a NodeDefs. */
export function editorToApi(workflow, defs) {
  if (!workflow || typeof workflow !== "object" || Array.isArray(workflow)) {
    throw new WorkflowFormatError("a workflow must be a JSON object");
  }
  if (!("nodes" in workflow)) throw new WorkflowFormatError("the editor workflow has no 'nodes' list");
  const subgraphs = workflow.definitions?.subgraphs ?? [];
  if (Array.isArray(subgraphs) && subgraphs.length > 0) {
    throw new WorkflowFormatError("the workflow uses subgraphs, which the server converts", { needsServer: true });
  }
  const converter = new Converter(defs, parseNodes(workflow.nodes), parseLinks(workflow.links));
  return converter.convert();
}

function isRegistered(defs, type) {
  const def = defs.get(type);
  return Boolean(def && !def.virtual);
}

class Converter {
  constructor(defs, nodes, links) {
    this.defs = defs;
    this.nodes = nodes;
    this.links = links;
    this.output = {};
  }

  convert() {
    for (const node of this.nodes.values()) {
      if (node.mode === MODE_MUTED || node.mode === MODE_BYPASSED || this.isVirtual(node)) continue;
      this.emitNode(node);
    }
    for (const entry of Object.values(this.output)) {
      for (const [name, value] of Object.entries(entry.inputs)) {
        if (Array.isArray(value) && !(value[0] in this.output)) delete entry.inputs[name];
      }
    }
    return this.output;
  }

  isVirtual(node) {
    return VIRTUAL_NODES.has(node.type) && !isRegistered(this.defs, node.type);
  }

  emitNode(node) {
    const legacyGroup = LEGACY_GROUP_NODE_PREFIXES.some((prefix) => node.type.startsWith(prefix));
    if (legacyGroup && !isRegistered(this.defs, node.type)) {
      throw new WorkflowFormatError(`node ${node.id} (${node.type}) is a legacy group node, which is not supported`);
    }
    const def = isRegistered(this.defs, node.type) ? this.defs.get(node.type) : null;
    const inputs = {};
    if (def) {
      for (const [name, value] of Object.entries(mapWidgetValues(def.widgetSpecs, node.widgetsValues))) {
        inputs[name] = apiValue(value);
      }
    }
    node.inputs.forEach((slot, index) => {
      const source = this.resolveInput(node, index, null, new Set());
      if (source?.output) inputs[slot.name] = [source.output.nodeId, source.output.slot];
      else if (source && "constant" in source) inputs[slot.name] = apiValue(source.constant);
    });
    const title = node.title || def?.displayName || node.type;
    this.output[node.id] = { class_type: node.type, inputs, _meta: { title } };
  }

  resolveInput(node, index, wantedType, visited) {
    visit(visited, node, "input", index);
    const slot = node.inputs[index];
    if (!slot || slot.link === null) return null;
    const wanted = wantedType ?? slot.type;
    const link = this.links.get(slot.link);
    if (!link) {
      throw new WorkflowFormatError(`node ${node.id} (${node.type}): input '${slot.name}' uses link ${slot.link}, `
        + "which is not in the links");
    }
    const origin = this.nodes.get(link.origin);
    if (!origin) {
      throw new WorkflowFormatError(`node ${node.id} (${node.type}): input '${slot.name}' is linked (link ${link.id}) `
        + `from node ${link.origin}, which does not exist`);
    }
    return this.resolveOutput(origin, link.originSlot, wanted, visited);
  }

  resolveOutput(node, slot, wantedType, visited) {
    visit(visited, node, "output", slot);
    if (node.mode === MODE_BYPASSED) {
      const index = bypassInputIndex(node, slot, wantedType);
      return index === null ? null : this.resolveInput(node, index, null, visited);
    }
    if (!this.isVirtual(node)) return { output: { nodeId: node.id, slot } };
    if (PASS_THROUGH_NODES.has(node.type)) return this.resolveInput(node, slot, wantedType, visited);
    if (CONSTANT_NODES.has(node.type)) {
      const value = firstValue(node.widgetsValues);
      return value === null || value === undefined ? null : { constant: value };
    }
    if (node.type in NAMED_GETTER_NODES) {
      const setter = this.findSetter(node, NAMED_GETTER_NODES[node.type]);
      return this.resolveInput(setter, slot, wantedType, visited);
    }
    return null;
  }

  findSetter(getter, setterType) {
    const name = firstValue(getter.widgetsValues);
    for (const node of this.nodes.values()) {
      if (node.type === setterType && name !== null && name !== undefined && name !== ""
          && firstValue(node.widgetsValues) === name) return node;
    }
    throw new WorkflowFormatError(`node ${getter.id} (${getter.type}): no ${setterType} named ${JSON.stringify(name)} `
      + "in the same graph");
  }
}

function visit(visited, node, side, slot) {
  const key = `${node.id}|${side}|${slot}`;
  if (visited.has(key)) {
    throw new WorkflowFormatError(`node ${node.id} (${node.type}): links loop back through its ${side} ${slot} `
      + "(a cycle of reroutes or bypassed nodes)");
  }
  visited.add(key);
}

function firstValue(values) {
  if (Array.isArray(values)) return values.length ? values[0] : null;
  if (values && typeof values === "object") return Object.values(values)[0] ?? null;
  return null;
}

function apiValue(value) {
  return Array.isArray(value) ? { __value__: value } : value;
}

function isUnset(type) {
  return type === null || type === undefined || type === "" || type === "*";
}

function typesMatch(slotType, other) {
  if (isUnset(slotType) || isUnset(other)) return true;
  return typesCompatible(String(slotType), String(other));
}

/** Which input of a bypassed node stands in for its output `slot` when the consumer wants `wantedType`. */
function bypassInputIndex(node, slot, wantedType) {
  if (node.inputs.length === 0) return null;
  if (isUnset(wantedType)) return slot < node.inputs.length ? slot : 0;
  const outputType = slot < node.outputTypes.length ? node.outputTypes[slot] : wantedType;
  const input = node.inputs[slot];
  if (input && typesMatch(input.type, outputType) && typesMatch(input.type, wantedType)) return slot;
  const exact = node.inputs.findIndex((item) => item.type === wantedType);
  if (exact >= 0) return exact;
  const compatible = node.inputs.findIndex((item) => typesMatch(item.type, outputType)
    && typesMatch(item.type, wantedType));
  return compatible >= 0 ? compatible : null;
}

function parseNodes(rawNodes) {
  if (!Array.isArray(rawNodes)) throw new WorkflowFormatError("'nodes' must be a list");
  const nodes = new Map();
  rawNodes.forEach((raw, position) => {
    const node = parseNode(raw, position);
    if (nodes.has(node.id)) throw new WorkflowFormatError(`node id ${node.id} is used twice`);
    nodes.set(node.id, node);
  });
  return nodes;
}

function parseNode(raw, position) {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw new WorkflowFormatError(`nodes[${position}] is not an object`);
  }
  if (raw.id === null || raw.id === undefined) throw new WorkflowFormatError(`nodes[${position}] has no 'id'`);
  if (typeof raw.type !== "string" || !raw.type) throw new WorkflowFormatError(`node ${raw.id} has no 'type'`);
  const where = `node ${raw.id} (${raw.type}): `;
  const inputs = raw.inputs ?? [];
  const outputs = raw.outputs ?? [];
  if (!Array.isArray(inputs) || !Array.isArray(outputs)) {
    throw new WorkflowFormatError(`${where}'inputs' and 'outputs' must be lists`);
  }
  const mode = raw.mode ?? 0;
  if (typeof mode !== "number" || !Number.isInteger(mode)) {
    throw new WorkflowFormatError(`${where}'mode' must be a number, got ${JSON.stringify(raw.mode)}`);
  }
  return {
    id: String(raw.id),
    type: raw.type,
    mode,
    title: raw.title ?? null,
    inputs: inputs.map((slot) => parseInput(slot, where)),
    outputTypes: outputs.map((slot) => (slot && typeof slot === "object" ? slot.type ?? null : null)),
    widgetsValues: raw.widgets_values,
  };
}

function parseInput(raw, where) {
  if (!raw || typeof raw !== "object" || typeof raw.name !== "string") {
    throw new WorkflowFormatError(`${where}input ${JSON.stringify(raw)} has no name`);
  }
  const widgetName = raw.widget && typeof raw.widget === "object" ? raw.widget.name : null;
  const link = raw.link ?? null;
  return { name: widgetName || raw.name, type: raw.type ?? null, link: link === null ? null : String(link) };
}

function parseLinks(rawLinks) {
  if (rawLinks === null || rawLinks === undefined) return new Map();
  if (!Array.isArray(rawLinks)) throw new WorkflowFormatError("'links' must be a list");
  const links = new Map();
  rawLinks.forEach((raw, position) => {
    if (raw === null) return;
    let fields;
    if (Array.isArray(raw) && raw.length >= 5) fields = raw.slice(0, 4);
    else if (raw && typeof raw === "object" && !Array.isArray(raw)) {
      fields = [raw.id, raw.origin_id, raw.origin_slot, raw.target_id];
    } else {
      throw new WorkflowFormatError(`links[${position}] must be [id, from_node, from_slot, to_node, to_slot, type] `
        + `or an object, got ${JSON.stringify(raw)}`);
    }
    const [id, origin, originSlot, target] = fields;
    const slotOk = Number.isInteger(originSlot) && originSlot >= 0;
    if (id === null || id === undefined || origin === null || origin === undefined
        || target === null || target === undefined || !slotOk) {
      throw new WorkflowFormatError(`links[${position}] is incomplete: ${JSON.stringify(raw)}`);
    }
    links.set(String(id), { id: String(id), origin: String(origin), originSlot, target: String(target) });
  });
  return links;
}

// ---- API -> editor -------------------------------------------------------------------------------------

const COLUMN_WIDTH = 320;
const ROW_GAP = 40;

/** Whether `data` looks like an API-format prompt: every entry a node with a class_type. */
export function isApiFormat(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) return false;
  const entries = Object.values(data);
  return entries.length > 0
    && entries.every((entry) => entry && typeof entry === "object" && typeof entry.class_type === "string");
}

/** An editor workflow for an API-format prompt: nodes in columns by depth, widgets set by name, links wired. */
export function apiToEditor(prompt, defs) {
  const graph = new Graph(defs);
  const ids = Object.keys(prompt);
  const depth = depths(prompt);
  const rows = new Map();
  const nodeFor = new Map();
  const numericIds = ids.every((id) => /^\d+$/.test(id));
  for (const [index, id] of ids.entries()) {
    const entry = prompt[id];
    const column = depth.get(id);
    const row = rows.get(column) ?? 0;
    const pos = [column * COLUMN_WIDTH, row];
    const node = defs.has(entry.class_type) ? graph.createNode(entry.class_type, pos)
      : unknownNode(graph, entry, pos);
    node.id = numericIds ? Number(id) : index + 1;
    const title = entry._meta?.title;
    if (title && title !== defs.get(entry.class_type)?.displayName) node.title = title;
    for (const [name, value] of Object.entries(entry.inputs ?? {})) {
      if (isLink(value)) continue;
      const widget = node.widget(name);
      if (widget) widget.value = value && typeof value === "object" && "__value__" in value ? value.__value__ : value;
    }
    for (const widget of node.widgets ?? []) if (widget.kind === "control") widget.value = "fixed";
    graph.addNode(node);
    nodeFor.set(id, node);
    rows.set(column, row + estimateHeight(node) + ROW_GAP);
  }
  for (const id of ids) {
    const target = nodeFor.get(id);
    for (const [name, value] of Object.entries(prompt[id].inputs ?? {})) {
      const origin = isLink(value) ? nodeFor.get(String(value[0])) : null;
      if (!origin) continue;
      while (origin.outputs.length <= value[1]) origin.outputs.push({ name: "*", type: "*", links: [] });
      let slot = target.inputIndex(name);
      if (slot < 0) {
        slot = graph.defs.get(target.type) ? graph.widgetInputSlot(target, name) : addRawInput(target, name);
      }
      try {
        graph.connect(origin, value[1], target, slot);
      } catch (error) {
        if (!(error instanceof GraphError)) throw error;
      }
    }
  }
  return graph.serialize();
}

function isLink(value) {
  return Array.isArray(value) && value.length === 2 && (typeof value[0] === "string" || typeof value[0] === "number")
    && Number.isInteger(value[1]);
}

function unknownNode(graph, entry, pos) {
  const node = graph.createNode("Note", pos);
  node.type = entry.class_type;
  node.widgets = null;
  node.rawWidgetsValues = undefined;
  return node;
}

function addRawInput(node, name) {
  node.inputs.push({ name, type: "*", link: null });
  return node.inputs.length - 1;
}

function estimateHeight(node) {
  return 60 + 24 * (node.inputs.filter((slot) => !slot.widget).length + (node.widgets?.length ?? 0));
}

/** Longest distance from a source node, by following links. */
function depths(prompt) {
  const memo = new Map();
  const visiting = new Set();
  const depthOf = (id) => {
    if (memo.has(id)) return memo.get(id);
    if (visiting.has(id) || !(id in prompt)) return 0;
    visiting.add(id);
    const sources = Object.values(prompt[id].inputs ?? {}).filter(isLink).map((value) => String(value[0]));
    const value = sources.length ? 1 + Math.max(...sources.map(depthOf)) : 0;
    visiting.delete(id);
    memo.set(id, value);
    return value;
  };
  return new Map(Object.keys(prompt).map((id) => [id, depthOf(id)]));
}
