/**
 * The graph model: nodes, links and groups, and the ComfyUI editor file format (LiteGraph "version": 0.4) it
 * loads from and saves to, so files round-trip with ComfyUI users' files.
 *
 * Every change goes through a method here and is announced as a "change" event, so the view, the undo
 * history and autosave stay in step whoever made it (the user, undo, an extension). Knows nothing of the DOM
 * or the server; node classes are read through `NodeDefs`.
 */
import {
  VIRTUAL_TYPES, mapControlValues, mapWidgetValues, typesCompatible, widgetLayout,
} from "./node_defs.js";

export const MODE_ALWAYS = 0;
export const MODE_MUTED = 2;
export const MODE_BYPASSED = 4;
export const TITLE_HEIGHT = 30;
const DEFAULT_NODE_WIDTH = 240;
const NODE_KEYS = ["id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
  "widgets_values", "title", "color", "bgcolor"];
const GRAPH_KEYS = ["last_node_id", "last_link_id", "nodes", "links", "groups", "version"];

export class GraphError extends Error {}

/** A node as the editor file stores it, with its widget values named. */
export class GraphNode {
  constructor(fields) {
    this.id = fields.id;
    this.type = fields.type;
    this.title = fields.title ?? null;
    this.pos = [...(fields.pos ?? [0, 0])];
    this.size = [...(fields.size ?? [DEFAULT_NODE_WIDTH, 100])];
    this.flags = { ...(fields.flags ?? {}) };
    this.mode = fields.mode ?? MODE_ALWAYS;
    this.color = fields.color ?? null;
    this.bgcolor = fields.bgcolor ?? null;
    this.properties = { ...(fields.properties ?? {}) };
    this.inputs = (fields.inputs ?? []).map((slot) => ({ ...slot, link: slot.link ?? null }));
    this.outputs = (fields.outputs ?? []).map((slot) => ({ ...slot, links: [...(slot.links ?? [])] }));
    /** [{kind: "widget"|"control"|"filter"|"upload", name, value, of?}] in stored order; null when unknown. */
    this.widgets = fields.widgets ?? null;
    this.rawWidgetsValues = fields.rawWidgetsValues;
    this.extra = fields.extra ?? {};
  }

  widget(name) {
    return this.widgets?.find((widget) => widget.kind === "widget" && widget.name === name) ?? null;
  }

  control(of) {
    return this.widgets?.find((widget) => widget.kind === "control" && widget.of === of) ?? null;
  }

  inputIndex(name) {
    return this.inputs.findIndex((slot) => (slot.widget?.name ?? slot.name) === name);
  }

  /** The input slot that feeds the widget `name`, if the node has one. */
  widgetInput(name) {
    const index = this.inputs.findIndex((slot) => slot.widget?.name === name);
    return index < 0 ? null : { index, slot: this.inputs[index] };
  }

  get isVirtual() {
    return Object.values(VIRTUAL_TYPES).includes(this.type);
  }
}

/** The graph; `defs` (a NodeDefs) says what each node type looks like. */
export class Graph extends EventTarget {
  constructor(defs) {
    super();
    this.defs = defs;
    this.clear();
  }

  clear() {
    this.nodes = new Map();
    this.links = new Map();
    this.groups = [];
    this.lastNodeId = 0;
    this.lastLinkId = 0;
    this.extra = {};
    this.preserved = {};
  }

  changed(what, detail = {}) {
    this.dispatchEvent(new CustomEvent("change", { detail: { what, ...detail } }));
  }

  // ---- nodes -------------------------------------------------------------------------------------------

  /** A new node of `type` from its definition, at `pos`; not yet in the graph. */
  createNode(type, pos = [0, 0]) {
    const def = this.defs.get(type);
    if (!def) throw new GraphError(`unknown node type ${type}`);
    const node = new GraphNode({ id: 0, type, pos, size: [DEFAULT_NODE_WIDTH, 0] });
    if (type === VIRTUAL_TYPES.Reroute) {
      node.inputs = [{ name: "", type: "*", link: null }];
      node.outputs = [{ name: "", type: "*", links: [] }];
      node.size = [90, 26];
      return node;
    }
    if (type === VIRTUAL_TYPES.Primitive) {
      node.outputs = [{ name: "connect to widget input", type: "*", links: [], widget: { name: "value" } }];
      node.widgets = [];
      return node;
    }
    if (type === VIRTUAL_TYPES.Note || type === VIRTUAL_TYPES.MarkdownNote) {
      node.widgets = [{ kind: "widget", name: "text", value: "" }];
      node.size = [320, 120];
      return node;
    }
    node.inputs = def.linkableSpecs.map((spec) => inputSlotFor(spec));
    node.outputs = def.outputs.map((output, index) => ({
      name: output.name, type: output.type, links: [], slot_index: index,
    }));
    node.widgets = buildWidgets(def, {}, {});
    node.properties = { "Node name for S&R": type };
    return node;
  }

  addNode(node) {
    if (!node.id || this.nodes.has(node.id)) node.id = this.lastNodeId + 1;
    this.lastNodeId = Math.max(this.lastNodeId, Number(node.id) || 0);
    this.nodes.set(node.id, node);
    this.changed("node-added", { node });
    return node;
  }

  getNode(id) {
    return this.nodes.get(id) ?? this.nodes.get(Number(id)) ?? this.nodes.get(String(id)) ?? null;
  }

  removeNode(id) {
    const node = this.getNode(id);
    if (!node) return;
    for (const slot of node.inputs) if (slot.link !== null) this.removeLink(slot.link, { quiet: true });
    for (const slot of node.outputs) for (const linkId of [...slot.links]) this.removeLink(linkId, { quiet: true });
    this.nodes.delete(node.id);
    this.changed("node-removed", { node });
  }

  setWidgetValue(node, name, value, kind = "widget") {
    const widget = node.widgets?.find((item) => item.kind === kind && (kind === "widget" ? item.name === name
      : item.of === name));
    if (!widget || widget.value === value) return;
    widget.value = value;
    this.changed("widget", { node, name, kind });
  }

  setMode(node, mode) {
    if (node.mode === mode) return;
    node.mode = mode;
    this.changed("node", { node });
  }

  setTitle(node, title) {
    node.title = title || null;
    this.changed("node", { node });
  }

  moveNode(node, pos) {
    node.pos = [pos[0], pos[1]];
    this.changed("move", { node });
  }

  // ---- links -------------------------------------------------------------------------------------------

  /** The type an output really carries: a reroute's or primitive's comes from what it is wired to. */
  outputType(node, slot, seen = new Set()) {
    const declared = node.outputs[slot]?.type ?? "*";
    if (seen.has(node.id)) return declared;
    seen.add(node.id);
    if (node.type === VIRTUAL_TYPES.Reroute) {
      const link = this.links.get(node.inputs[0]?.link);
      const origin = link && this.getNode(link.origin_id);
      return origin ? this.outputType(origin, link.origin_slot, seen) : "*";
    }
    if (node.type === VIRTUAL_TYPES.Primitive) return this.primitiveTarget(node)?.spec?.type ?? "*";
    return declared;
  }

  /** The type an input wants: a reroute's comes from what its output feeds. */
  inputType(node, slot, seen = new Set()) {
    if (node.type !== VIRTUAL_TYPES.Reroute || seen.has(node.id)) return node.inputs[slot]?.type ?? "*";
    seen.add(node.id);
    for (const linkId of node.outputs[0]?.links ?? []) {
      const link = this.links.get(linkId);
      const target = link && this.getNode(link.target_id);
      if (target) return this.inputType(target, link.target_slot, seen);
    }
    return "*";
  }

  /** The first widget a primitive node feeds, with its spec: what the primitive shows and stands for. */
  primitiveTarget(node) {
    for (const linkId of node.outputs[0]?.links ?? []) {
      const link = this.links.get(linkId);
      const target = link && this.getNode(link.target_id);
      const widgetName = target?.inputs[link.target_slot]?.widget?.name;
      const spec = widgetName && this.defs.get(target.type)?.input(widgetName);
      if (spec) return { node: target, name: widgetName, spec };
    }
    return null;
  }

  /** Whether origin output `originSlot` may feed target input `targetSlot`: {ok} or {ok: false, reason}. */
  canConnect(origin, originSlot, target, targetSlot) {
    const input = target.inputs[targetSlot];
    const output = origin.outputs[originSlot];
    if (!input || !output) return { ok: false, reason: "no such slot" };
    if (origin.id === target.id) return { ok: false, reason: "a node cannot feed itself" };
    const outputType = this.outputType(origin, originSlot);
    const inputType = this.inputType(target, targetSlot);
    const inputName = input.label || input.widget?.name || input.name || "input";
    if (origin.type === VIRTUAL_TYPES.Primitive && !input.widget) {
      return { ok: false, reason: "a Primitive only feeds widget inputs" };
    }
    if (!typesCompatible(outputType, inputType)) {
      return { ok: false, reason: `${outputType} cannot connect to ${inputType} (${inputName})` };
    }
    if (this.reaches(target, origin)) return { ok: false, reason: "that wire would make a loop" };
    return { ok: true, type: outputType === "*" ? inputType : outputType };
  }

  /** Whether following outputs from `start` reaches `goal`. */
  reaches(start, goal) {
    const pending = [start];
    const seen = new Set();
    while (pending.length) {
      const node = pending.pop();
      if (node.id === goal.id) return true;
      if (seen.has(node.id)) continue;
      seen.add(node.id);
      for (const slot of node.outputs) {
        for (const linkId of slot.links) {
          const next = this.getNode(this.links.get(linkId)?.target_id);
          if (next) pending.push(next);
        }
      }
    }
    return false;
  }

  /** Wire origin output to target input (replacing what fed that input); throws GraphError when refused. */
  connect(origin, originSlot, target, targetSlot) {
    const check = this.canConnect(origin, originSlot, target, targetSlot);
    if (!check.ok) throw new GraphError(check.reason);
    const existing = target.inputs[targetSlot].link;
    if (existing !== null) this.removeLink(existing, { quiet: true });
    const link = {
      id: ++this.lastLinkId, origin_id: origin.id, origin_slot: originSlot,
      target_id: target.id, target_slot: targetSlot, type: check.type,
    };
    this.links.set(link.id, link);
    origin.outputs[originSlot].links.push(link.id);
    target.inputs[targetSlot].link = link.id;
    if (origin.type === VIRTUAL_TYPES.Primitive) this.adoptPrimitiveWidget(origin);
    this.changed("link", { link });
    return link;
  }

  /** The input slot index for widget `name`, adding a widget input (older files only list sockets). */
  widgetInputSlot(node, name) {
    const found = node.widgetInput(name);
    if (found) return found.index;
    const spec = this.defs.get(node.type)?.input(name);
    if (!spec) throw new GraphError(`${node.type} has no widget ${name}`);
    node.inputs.push(inputSlotFor(spec));
    return node.inputs.length - 1;
  }

  /** Whether origin output may feed widget `name` of target, adding the widget's input slot only to ask. */
  canConnectWidget(origin, originSlot, target, name) {
    const existing = target.widgetInput(name);
    if (existing) return this.canConnect(origin, originSlot, target, existing.index);
    const spec = this.defs.get(target.type)?.input(name);
    if (!spec) return { ok: false, reason: `${name} cannot take a wire` };
    target.inputs.push(inputSlotFor(spec));
    try {
      return this.canConnect(origin, originSlot, target, target.inputs.length - 1);
    } finally {
      target.inputs.pop();
    }
  }

  /** Wire origin output into widget `name` of target (adding its input slot when the file had none). */
  connectWidget(origin, originSlot, target, name) {
    const check = this.canConnectWidget(origin, originSlot, target, name);
    if (!check.ok) throw new GraphError(check.reason);
    return this.connect(origin, originSlot, target, this.widgetInputSlot(target, name));
  }

  removeLink(linkId, { quiet = false } = {}) {
    const link = this.links.get(linkId);
    if (!link) return;
    this.links.delete(linkId);
    const origin = this.getNode(link.origin_id);
    const target = this.getNode(link.target_id);
    const output = origin?.outputs[link.origin_slot];
    if (output) output.links = output.links.filter((id) => id !== linkId);
    const input = target?.inputs[link.target_slot];
    if (input && input.link === linkId) input.link = null;
    if (!quiet) this.changed("link", { link, removed: true });
  }

  /** A primitive shows the widget of its first target, keeping its value when it already has one. */
  adoptPrimitiveWidget(node) {
    const target = this.primitiveTarget(node);
    if (!target) return;
    const { spec } = target;
    const current = node.widgets?.find((widget) => widget.kind === "widget");
    const currentControl = node.widgets?.find((widget) => widget.kind === "control");
    const value = current ? current.value : (target.node.widget(target.name)?.value ?? spec.defaultValue);
    node.widgets = [{ kind: "widget", name: "value", value }];
    if (spec.hasControlAfterGenerate) {
      const control = currentControl?.value ?? target.node.control(target.name)?.value ?? "fixed";
      node.widgets.push({ kind: "control", name: "control_after_generate", of: "value", value: control });
    }
    node.outputs[0].type = spec.type;
  }

  /** The name of the subgraph a node type refers to (subgraph instances have its id as their type), or null. */
  subgraphName(type) {
    const subgraphs = this.preserved.definitions?.subgraphs;
    if (!Array.isArray(subgraphs)) return null;
    const found = subgraphs.find((subgraph) => subgraph?.id === type);
    return found ? String(found.name ?? "Subgraph") : null;
  }

  // ---- groups ------------------------------------------------------------------------------------------

  addGroup(group) {
    this.groups.push({ title: "Group", color: "#3f789e", font_size: 24, flags: {}, ...group });
    this.changed("group");
  }

  removeGroup(group) {
    this.groups = this.groups.filter((item) => item !== group);
    this.changed("group");
  }

  // ---- editor file format --------------------------------------------------------------------------------

  /** The graph as an editor (LiteGraph 0.4) workflow object. */
  serialize() {
    const order = executionOrder(this);
    const nodes = [...this.nodes.values()].map((node) => serializeNode(node, order.get(node.id) ?? 0));
    const links = [...this.links.values()].map((link) => [link.id, link.origin_id, link.origin_slot,
      link.target_id, link.target_slot, link.type]);
    return {
      ...this.preserved,
      last_node_id: this.lastNodeId,
      last_link_id: this.lastLinkId,
      nodes,
      links,
      groups: this.groups.map((group) => ({ ...group, bounding: [...group.bounding] })),
      config: this.preserved.config ?? {},
      extra: structuredClone(this.extra),
      version: 0.4,
    };
  }

  /** Replace the graph with an editor workflow; unknown node types are kept as they are. */
  load(workflow) {
    if (!workflow || typeof workflow !== "object" || !Array.isArray(workflow.nodes)) {
      throw new GraphError("not an editor workflow: it has no 'nodes' list");
    }
    this.clear();
    for (const [key, value] of Object.entries(workflow)) {
      if (!GRAPH_KEYS.includes(key) && key !== "extra") this.preserved[key] = structuredClone(value);
    }
    this.extra = structuredClone(workflow.extra ?? {});
    for (const raw of workflow.nodes) {
      const node = this.deserializeNode(raw);
      if (this.nodes.has(node.id)) throw new GraphError(`node id ${node.id} is used twice`);
      this.nodes.set(node.id, node);
      this.lastNodeId = Math.max(this.lastNodeId, Number(node.id) || 0);
    }
    for (const raw of workflow.links ?? []) {
      if (raw === null) continue;
      const link = parseLink(raw);
      this.links.set(link.id, link);
      this.lastLinkId = Math.max(this.lastLinkId, Number(link.id) || 0);
    }
    this.dropBrokenLinks();
    this.groups = (workflow.groups ?? []).map((group) => ({
      ...group, bounding: [...(group.bounding ?? [0, 0, 200, 100])],
    }));
    this.lastNodeId = Math.max(this.lastNodeId, Number(workflow.last_node_id) || 0);
    this.lastLinkId = Math.max(this.lastLinkId, Number(workflow.last_link_id) || 0);
    for (const node of this.nodes.values()) {
      if (node.type === VIRTUAL_TYPES.Primitive && this.primitiveTarget(node)) this.adoptPrimitiveWidget(node);
    }
    this.changed("load");
  }

  deserializeNode(raw) {
    if (!raw || typeof raw !== "object" || raw.id === undefined || raw.id === null || !raw.type) {
      throw new GraphError(`a node has no id or type: ${JSON.stringify(raw).slice(0, 80)}`);
    }
    const extra = {};
    for (const [key, value] of Object.entries(raw)) if (!NODE_KEYS.includes(key)) extra[key] = value;
    const node = new GraphNode({ ...raw, extra });
    const def = this.defs.get(raw.type);
    const stored = raw.widgets_values;
    if (raw.type === VIRTUAL_TYPES.Note || raw.type === VIRTUAL_TYPES.MarkdownNote) {
      node.widgets = [{ kind: "widget", name: "text", value: firstValue(stored) ?? "" }];
    } else if (raw.type === VIRTUAL_TYPES.Primitive) {
      node.widgets = primitiveWidgets(stored);
    } else if (def && !def.virtual) {
      const specs = def.widgetSpecs;
      node.widgets = buildWidgets(def, mapWidgetValues(specs, stored), mapControlValues(specs, stored));
      for (const spec of def.linkableSpecs) {
        const known = node.inputs.some((slot) => (slot.widget?.name ?? slot.name) === spec.name);
        if (!known && !spec.isWidget) node.inputs.push(inputSlotFor(spec));
      }
      node.outputs.push(...def.outputs.slice(node.outputs.length).map((output, offset) => ({
        name: output.name, type: output.type, links: [], slot_index: node.outputs.length + offset,
      })));
    } else if (!def) {
      node.rawWidgetsValues = stored;
    }
    return node;
  }

  /** Links that point at missing nodes or slots, and slot references to missing links, are dropped. */
  dropBrokenLinks() {
    for (const link of [...this.links.values()]) {
      const origin = this.getNode(link.origin_id);
      const target = this.getNode(link.target_id);
      if (!origin || !target || !origin.outputs[link.origin_slot] || !target.inputs[link.target_slot]) {
        this.links.delete(link.id);
        continue;
      }
      link.origin_id = origin.id;
      link.target_id = target.id;
      target.inputs[link.target_slot].link = link.id;
      const output = origin.outputs[link.origin_slot];
      if (!output.links.includes(link.id)) output.links.push(link.id);
    }
    for (const node of this.nodes.values()) {
      for (const slot of node.inputs) if (slot.link !== null && !this.links.has(slot.link)) slot.link = null;
      for (const slot of node.outputs) slot.links = slot.links.filter((id) => this.links.has(id));
    }
  }

  // ---- copy and paste ----------------------------------------------------------------------------------

  /** The selected nodes and the links between them (and, for pasting with inputs, the links into them). */
  copy(nodeIds) {
    const ids = new Set(nodeIds.map((id) => this.getNode(id)?.id).filter((id) => id !== undefined));
    const nodes = [...ids].map((id) => serializeNode(this.getNode(id), 0));
    const links = [...this.links.values()].filter((link) => ids.has(link.target_id))
      .map((link) => ({ ...link, internal: ids.has(link.origin_id) }));
    return { nodes, links };
  }

  /** Add copied nodes with new ids, their top-left at `at`; returns the new nodes. */
  paste(clip, at, { keepInputLinks = false } = {}) {
    if (!clip?.nodes?.length) return [];
    const left = Math.min(...clip.nodes.map((raw) => raw.pos[0]));
    const top = Math.min(...clip.nodes.map((raw) => raw.pos[1]));
    const newIds = new Map();
    const added = [];
    for (const raw of clip.nodes) {
      const node = this.deserializeNode({
        ...raw, pos: [raw.pos[0] - left + at[0], raw.pos[1] - top + at[1]],
        inputs: (raw.inputs ?? []).map((slot) => ({ ...slot, link: null })),
        outputs: (raw.outputs ?? []).map((slot) => ({ ...slot, links: [] })),
      });
      node.id = ++this.lastNodeId;
      newIds.set(raw.id, node.id);
      this.nodes.set(node.id, node);
      added.push(node);
    }
    for (const link of clip.links) {
      const origin = link.internal ? this.getNode(newIds.get(link.origin_id))
        : keepInputLinks && this.getNode(link.origin_id);
      const target = this.getNode(newIds.get(link.target_id));
      if (!origin || !target) continue;
      try {
        this.connect(origin, link.origin_slot, target, link.target_slot);
      } catch (error) {
        if (!(error instanceof GraphError)) throw error;
      }
    }
    this.changed("paste", { nodes: added });
    return added;
  }
}

// ---- helpers -------------------------------------------------------------------------------------------

function inputSlotFor(spec) {
  const slot = { name: spec.name, type: spec.type, link: null };
  if (spec.isWidget) slot.widget = { name: spec.name };
  return slot;
}

/** The widget records of a node of `def`, in stored order, from named values and control modes. */
function buildWidgets(def, values, controls) {
  return widgetLayout(def.widgetSpecs).map((place) => {
    const spec = place.kind === "widget" ? def.input(place.name) : null;
    switch (place.kind) {
      case "widget":
        return { kind: "widget", name: place.name,
          value: place.name in values ? values[place.name] : spec.defaultValue };
      case "control":
        return { kind: "control", name: place.name, of: place.of, value: controls[place.of] ?? "randomize" };
      case "filter":
        return { kind: "filter", name: place.name, of: place.of, value: "" };
      default:
        return { kind: "upload", name: place.name, value: "image" };
    }
  });
}

function primitiveWidgets(stored) {
  const values = Array.isArray(stored) ? stored : [];
  if (values.length === 0) return [];
  const widgets = [{ kind: "widget", name: "value", value: values[0] }];
  if (typeof values[1] === "string") {
    widgets.push({ kind: "control", name: "control_after_generate", of: "value", value: values[1] });
  }
  return widgets;
}

function firstValue(stored) {
  if (Array.isArray(stored)) return stored[0];
  if (stored && typeof stored === "object") return Object.values(stored)[0];
  return undefined;
}

function parseLink(raw) {
  if (Array.isArray(raw) && raw.length >= 5) {
    const [id, originId, originSlot, targetId, targetSlot, type] = raw;
    return { id, origin_id: originId, origin_slot: originSlot, target_id: targetId, target_slot: targetSlot,
      type: type ?? "*" };
  }
  if (raw && typeof raw === "object") {
    return { id: raw.id, origin_id: raw.origin_id, origin_slot: raw.origin_slot, target_id: raw.target_id,
      target_slot: raw.target_slot, type: raw.type ?? "*" };
  }
  throw new GraphError(`a link must be [id, from_node, from_slot, to_node, to_slot, type], got ${JSON.stringify(raw)}`);
}

function serializeNode(node, order) {
  const entry = {
    id: node.id, type: node.type, pos: [...node.pos], size: [...node.size], flags: { ...node.flags },
    order, mode: node.mode,
    inputs: node.inputs.map((slot) => ({ ...slot })),
    outputs: node.outputs.map((slot) => ({ ...slot, links: [...slot.links] })),
    properties: { ...node.properties },
  };
  if (node.title) entry.title = node.title;
  if (node.color) entry.color = node.color;
  if (node.bgcolor) entry.bgcolor = node.bgcolor;
  if (node.widgets) {
    if (node.widgets.length || node.type === VIRTUAL_TYPES.Primitive) {
      entry.widgets_values = node.widgets.map((widget) => widget.value);
    }
  } else if (node.rawWidgetsValues !== undefined) {
    entry.widgets_values = structuredClone(node.rawWidgetsValues);
  }
  return { ...structuredClone(node.extra), ...entry };
}

/** Each node's position in a topological order (what LiteGraph stores as `order`). */
function executionOrder(graph) {
  const indegree = new Map([...graph.nodes.keys()].map((id) => [id, 0]));
  for (const link of graph.links.values()) indegree.set(link.target_id, (indegree.get(link.target_id) ?? 0) + 1);
  const ready = [...graph.nodes.keys()].filter((id) => indegree.get(id) === 0).sort((a, b) => a - b);
  const order = new Map();
  while (ready.length) {
    const id = ready.shift();
    order.set(id, order.size);
    for (const slot of graph.getNode(id).outputs) {
      for (const linkId of slot.links) {
        const target = graph.links.get(linkId)?.target_id;
        if (target === undefined) continue;
        indegree.set(target, indegree.get(target) - 1);
        if (indegree.get(target) === 0) ready.push(target);
      }
    }
  }
  for (const id of graph.nodes.keys()) if (!order.has(id)) order.set(id, order.size);
  return order;
}
