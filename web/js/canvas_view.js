/**
 * The canvas: nodes as DOM elements and wires as SVG paths inside one panned and zoomed "world" element,
 * and every pointer gesture on it: pan (drag the background, middle button, or Space+drag), zoom (wheel),
 * select (click, Shift/Ctrl+click, Ctrl/Shift+drag a box), move, resize, drag wires between sockets, and
 * dropping files. The view follows the graph's "change" events; what a gesture means beyond the view
 * (opening the palette, menus, uploads) it asks of `editor`.
 *
 * Coordinates: world -> screen is (world + offset) * scale, LiteGraph's convention, so `extra.ds` in saved
 * files means the same here as in ComfyUI.
 */
import { GraphError, TITLE_HEIGHT } from "./graph.js";
import { typesCompatible } from "./node_defs.js";
import { NodeView } from "./node_view.js";
import { element, showHint } from "./dialogs.js";
import { typeColor } from "./type_colors.js";

const SVG = "http://www.w3.org/2000/svg";
const MIN_SCALE = 0.1;
const MAX_SCALE = 4;
const CLICK_SLOP = 4;
const INTERACTIVE = "input, textarea, select, button, a, label, .number-drag, .node-images img, .input-preview";

export class CanvasView {
  constructor(doc, root, editor) {
    this.doc = doc;
    this.root = root;
    this.editor = editor;
    this.scale = 1;
    this.offset = [0, 0];
    this.views = new Map();
    this.selection = new Set();
    this.gesture = null;
    this.spaceHeld = false;
    this.lastPointer = [0, 0];
    this.linksFrame = 0;
    this.linkPaths = new Map();

    this.world = element(doc, "div", "world");
    this.groupsLayer = element(doc, "div", "groups-layer");
    this.svg = doc.createElementNS(SVG, "svg");
    this.svg.classList.add("links-layer");
    this.nodesLayer = element(doc, "div", "nodes-layer");
    const dragLayer = doc.createElementNS(SVG, "svg");
    dragLayer.classList.add("links-layer", "drag-layer");
    this.dragPath = doc.createElementNS(SVG, "path");
    this.dragPath.classList.add("drag-wire");
    dragLayer.append(this.dragPath);
    this.world.append(this.groupsLayer, this.svg, this.nodesLayer, dragLayer);
    this.selectionBox = element(doc, "div", "selection-box");
    this.selectionBox.hidden = true;
    root.append(this.world, this.selectionBox);
    this.resizeObserver = new ResizeObserver((entries) => {
      for (const entry of entries) this.views.get(entry.target.dataset.nodeId)?.invalidateGeometry();
      this.scheduleLinks();
    });
    this.bindEvents();
    this.applyTransform();
  }

  get graph() {
    return this.editor.graph;
  }

  // ---- coordinates -------------------------------------------------------------------------------------

  toWorld(clientX, clientY) {
    const rect = this.root.getBoundingClientRect();
    return [(clientX - rect.left) / this.scale - this.offset[0], (clientY - rect.top) / this.scale - this.offset[1]];
  }

  toClient([x, y]) {
    const rect = this.root.getBoundingClientRect();
    return [(x + this.offset[0]) * this.scale + rect.left, (y + this.offset[1]) * this.scale + rect.top];
  }

  applyTransform() {
    this.world.style.transform = `scale(${this.scale}) translate(${this.offset[0]}px, ${this.offset[1]}px)`;
    const grid = 20 * this.scale;
    this.root.style.backgroundSize = `${grid}px ${grid}px, ${grid * 5}px ${grid * 5}px`;
    const x = this.offset[0] * this.scale;
    const y = this.offset[1] * this.scale;
    this.root.style.backgroundPosition = `${x}px ${y}px, ${x}px ${y}px`;
    this.root.dataset.scale = this.scale.toFixed(2);
  }

  /** The view as saved in `extra.ds`. */
  get ds() {
    return { scale: this.scale, offset: [...this.offset] };
  }

  set ds(value) {
    if (!value || typeof value.scale !== "number" || !Array.isArray(value.offset)) return;
    this.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, value.scale));
    this.offset = [Number(value.offset[0]) || 0, Number(value.offset[1]) || 0];
    this.applyTransform();
  }

  zoomAt(clientX, clientY, factor) {
    const before = this.toWorld(clientX, clientY);
    this.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * factor));
    const rect = this.root.getBoundingClientRect();
    this.offset = [(clientX - rect.left) / this.scale - before[0], (clientY - rect.top) / this.scale - before[1]];
    this.applyTransform();
  }

  /** Pan and zoom so every node (or the selected ones) is in view. */
  fitView(onlySelected = false) {
    const views = [...this.views.values()].filter((view) => !onlySelected || this.selection.has(view.node.id));
    if (views.length === 0) {
      this.scale = 1;
      this.offset = [0, 0];
      this.applyTransform();
      return;
    }
    const bounds = views.map((view) => this.nodeBounds(view));
    const left = Math.min(...bounds.map((b) => b[0]));
    const top = Math.min(...bounds.map((b) => b[1]));
    const right = Math.max(...bounds.map((b) => b[0] + b[2]));
    const bottom = Math.max(...bounds.map((b) => b[1] + b[3]));
    const rect = this.root.getBoundingClientRect();
    const margin = 40;
    const [width, height] = [right - left, bottom - top];
    const scale = Math.min(1.2, (rect.width - margin * 2) / width, (rect.height - margin * 2) / height);
    this.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, scale));
    this.offset = [(rect.width / this.scale - width) / 2 - left, (rect.height / this.scale - height) / 2 - top];
    this.applyTransform();
  }

  /** [x, y, width, height] of a node in world units, title included. */
  nodeBounds(view) {
    return [view.node.pos[0], view.node.pos[1] - view.titleHeight, view.el.offsetWidth, view.el.offsetHeight];
  }

  /** Where a new node goes when no point was given: the middle of the visible canvas. */
  visibleCenter() {
    const rect = this.root.getBoundingClientRect();
    return this.toWorld(rect.left + rect.width / 2 - 120, rect.top + rect.height / 2 - 80);
  }

  // ---- following the graph -----------------------------------------------------------------------------

  rebuild() {
    for (const view of this.views.values()) this.resizeObserver.unobserve(view.el);
    this.views.clear();
    this.nodesLayer.replaceChildren();
    this.linkPaths.clear();
    this.svg.replaceChildren();
    this.selection = new Set([...this.selection].filter((id) => this.graph.getNode(id)));
    for (const node of this.graph.nodes.values()) this.addView(node);
    this.renderGroups();
    this.scheduleLinks();
  }

  addView(node) {
    const view = new NodeView(this.doc, node, this.editor);
    this.views.set(String(node.id), view);
    this.nodesLayer.append(view.el);
    this.resizeObserver.observe(view.el);
    view.el.classList.toggle("selected", this.selection.has(node.id));
    this.editor.nodeViewCreated?.(view);
    return view;
  }

  viewOf(node) {
    return this.views.get(String(node?.id ?? node)) ?? null;
  }

  onGraphChange({ what, node, link, nodes }) {
    switch (what) {
      case "load":
        this.selection.clear();
        this.rebuild();
        return;
      case "node-added":
        this.addView(node);
        break;
      case "node-removed": {
        const view = this.viewOf(node);
        if (view) {
          this.resizeObserver.unobserve(view.el);
          view.el.remove();
          this.views.delete(String(node.id));
        }
        this.selection.delete(node.id);
        this.refreshAll();
        break;
      }
      case "paste":
        for (const added of nodes) this.addView(added);
        this.refreshAll();
        break;
      case "link":
        for (const id of [link.origin_id, link.target_id]) {
          const view = this.viewOf(id);
          if (view) this.refreshView(view);
        }
        this.refreshPrimitives();
        break;
      case "widget":
      case "node":
      case "move":
        if (node) this.refreshView(this.viewOf(node));
        break;
      case "group":
        this.renderGroups();
        break;
      default:
        this.refreshAll();
    }
    this.scheduleLinks();
  }

  /** Re-render a node whose set of slots or widgets may have changed, else update it in place. */
  refreshView(view) {
    if (!view) return;
    if (view.shapeKey() !== view.shape) view.render();
    else view.update();
  }

  refreshPrimitives() {
    for (const view of this.views.values()) if (view.node.type === "PrimitiveNode") view.render();
  }

  refreshAll() {
    for (const view of this.views.values()) this.refreshView(view);
  }

  // ---- wires -------------------------------------------------------------------------------------------

  scheduleLinks() {
    if (this.linksFrame) return;
    this.linksFrame = requestAnimationFrame(() => {
      this.linksFrame = 0;
      this.drawLinks();
    });
  }

  drawLinks() {
    const seen = new Set();
    for (const link of this.graph.links.values()) {
      const origin = this.viewOf(link.origin_id);
      const target = this.viewOf(link.target_id);
      if (!origin || !target) continue;
      seen.add(link.id);
      let entry = this.linkPaths.get(link.id);
      if (!entry) {
        entry = this.createLinkPath(link.id);
        this.linkPaths.set(link.id, entry);
      }
      const from = origin.socketPosition("output", link.origin_slot);
      const to = target.socketPosition("input", link.target_slot);
      const d = wirePath(from, to);
      entry.path.setAttribute("d", d);
      entry.hit.setAttribute("d", d);
      const type = link.type === "*" ? this.graph.outputType(origin.node, link.origin_slot) : link.type;
      entry.path.style.stroke = typeColor(type);
      entry.path.classList.toggle("inactive", origin.node.mode !== 0 || target.node.mode !== 0);
      entry.path.classList.toggle("selected", this.selection.has(origin.node.id) || this.selection.has(target.node.id));
    }
    for (const [id, entry] of this.linkPaths) {
      if (seen.has(id)) continue;
      entry.path.remove();
      entry.hit.remove();
      this.linkPaths.delete(id);
    }
    this.root.dataset.links = String(seen.size);
  }

  createLinkPath(linkId) {
    const path = this.doc.createElementNS(SVG, "path");
    path.classList.add("wire");
    path.dataset.linkId = linkId;
    const hit = this.doc.createElementNS(SVG, "path");
    hit.classList.add("wire-hit");
    hit.dataset.linkId = linkId;
    hit.addEventListener("contextmenu", (event) => {
      event.preventDefault();
      event.stopPropagation();
      this.editor.linkMenu(linkId, event.clientX, event.clientY);
    });
    this.svg.append(hit, path);
    return { path, hit };
  }

  // ---- groups ------------------------------------------------------------------------------------------

  renderGroups() {
    this.groupsLayer.replaceChildren();
    this.graph.groups.forEach((group, index) => {
      const [x, y, width, height] = group.bounding;
      const box = element(this.doc, "div", "group");
      box.dataset.group = index;
      Object.assign(box.style, { left: `${x}px`, top: `${y}px`, width: `${width}px`, height: `${height}px` });
      box.style.setProperty("--group-color", group.color ?? "#3f789e");
      const title = element(this.doc, "div", "group-title", group.title ?? "Group");
      title.style.fontSize = `${Math.max(12, Math.min(40, group.font_size ?? 24))}px`;
      const resize = element(this.doc, "div", "group-resize");
      box.append(title, resize);
      this.groupsLayer.append(box);
    });
  }

  /** Nodes whose top-left corner lies inside a group's box. */
  nodesInGroup(group) {
    const [x, y, width, height] = group.bounding;
    return [...this.graph.nodes.values()].filter((node) => node.pos[0] >= x && node.pos[0] <= x + width
      && node.pos[1] - TITLE_HEIGHT >= y && node.pos[1] - TITLE_HEIGHT <= y + height);
  }

  // ---- selection ---------------------------------------------------------------------------------------

  setSelection(ids) {
    this.selection = new Set(ids);
    for (const view of this.views.values()) view.el.classList.toggle("selected", this.selection.has(view.node.id));
    this.scheduleLinks();
    this.editor.selectionChanged?.();
  }

  toggleSelected(id) {
    const next = new Set(this.selection);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    this.setSelection(next);
  }

  selectedNodes() {
    return [...this.selection].map((id) => this.graph.getNode(id)).filter(Boolean);
  }

  // ---- events ------------------------------------------------------------------------------------------

  bindEvents() {
    const { root, doc } = this;
    root.addEventListener("pointerdown", (event) => this.onPointerDown(event));
    root.addEventListener("pointermove", (event) => this.onPointerMove(event));
    root.addEventListener("pointerup", (event) => this.onPointerUp(event));
    root.addEventListener("pointercancel", (event) => this.onPointerUp(event, true));
    root.addEventListener("wheel", (event) => this.onWheel(event), { passive: false });
    root.addEventListener("dblclick", (event) => this.onDoubleClick(event));
    root.addEventListener("contextmenu", (event) => this.onContextMenu(event));
    root.addEventListener("dragover", (event) => {
      if (event.dataTransfer?.types?.includes("Files")) {
        event.preventDefault();
        event.dataTransfer.dropEffect = "copy";
        const nodeEl = event.target.closest?.(".node");
        this.markDropTarget(nodeEl);
      }
    });
    root.addEventListener("dragleave", () => this.markDropTarget(null));
    root.addEventListener("drop", (event) => {
      event.preventDefault();
      this.markDropTarget(null);
      const nodeEl = event.target.closest?.(".node");
      const node = nodeEl ? this.graph.getNode(nodeEl.dataset.nodeId) : null;
      this.editor.dropFiles([...(event.dataTransfer?.files ?? [])], node, this.toWorld(event.clientX, event.clientY));
    });
    doc.addEventListener("keydown", (event) => {
      if (event.code === "Space" && !isTyping(event.target)) {
        this.spaceHeld = true;
        root.classList.add("space-pan");
      }
    });
    doc.addEventListener("keyup", (event) => {
      if (event.code === "Space") {
        this.spaceHeld = false;
        root.classList.remove("space-pan");
      }
    });
  }

  markDropTarget(nodeEl) {
    for (const el of this.root.querySelectorAll(".node.drop-target")) {
      if (el !== nodeEl) el.classList.remove("drop-target");
    }
    nodeEl?.classList.add("drop-target");
  }

  onPointerDown(event) {
    this.lastPointer = [event.clientX, event.clientY];
    const target = event.target;
    if (event.button === 1 || (event.button === 0 && this.spaceHeld)) {
      event.preventDefault();
      this.begin(event, { kind: "pan" });
      return;
    }
    if (event.button !== 0) return;
    const nodeEl = target.closest(".node");
    const node = nodeEl ? this.graph.getNode(nodeEl.dataset.nodeId) : null;
    if (node) {
      const socket = target.closest(".socket");
      if (socket) {
        event.preventDefault();
        this.beginWire(event, node, socket.closest(".slot, .widget-row"));
        return;
      }
      const toggle = event.shiftKey || event.ctrlKey || event.metaKey;
      if (!this.selection.has(node.id) && !toggle) this.setSelection([node.id]);
      if (target.closest(".node-resize")) {
        event.preventDefault();
        const startHeight = nodeEl.querySelector(".node-body").offsetHeight;
        this.begin(event, { kind: "resize", node, startSize: [...node.size], startHeight });
        return;
      }
      if (target.closest(INTERACTIVE)) return;
      event.preventDefault();
      this.doc.activeElement?.blur?.();
      const wasSelected = this.selection.has(node.id);
      if (toggle && !wasSelected) this.toggleSelected(node.id);
      const moving = this.selectedNodes();
      this.begin(event, {
        kind: "move", node, toggle, wasSelected,
        starts: new Map(moving.map((item) => [item.id, [...item.pos]])),
      });
      return;
    }
    const groupEl = target.closest(".group");
    if (groupEl) {
      const group = this.graph.groups[Number(groupEl.dataset.group)];
      if (target.closest(".group-resize")) {
        event.preventDefault();
        this.begin(event, { kind: "group-resize", group, start: [...group.bounding] });
        return;
      }
      if (target.closest(".group-title")) {
        event.preventDefault();
        const members = this.nodesInGroup(group);
        this.begin(event, { kind: "group-move", group, start: [...group.bounding],
          starts: new Map(members.map((item) => [item.id, [...item.pos]])) });
        return;
      }
    }
    if (target.closest(".wire-hit")) return;
    event.preventDefault();
    this.doc.activeElement?.blur?.();
    const boxSelect = event.shiftKey || event.ctrlKey || event.metaKey;
    this.begin(event, boxSelect ? { kind: "box", additive: new Set(this.selection) } : { kind: "pan" });
  }

  begin(event, gesture) {
    this.gesture = { ...gesture, pointerId: event.pointerId, startClient: [event.clientX, event.clientY],
      startWorld: this.toWorld(event.clientX, event.clientY), startOffset: [...this.offset], moved: false };
    this.root.setPointerCapture(event.pointerId);
    this.root.classList.add(`gesture-${gesture.kind}`);
  }

  onPointerMove(event) {
    this.lastPointer = [event.clientX, event.clientY];
    const gesture = this.gesture;
    if (!gesture || event.pointerId !== gesture.pointerId) return;
    const dx = event.clientX - gesture.startClient[0];
    const dy = event.clientY - gesture.startClient[1];
    if (Math.abs(dx) > CLICK_SLOP || Math.abs(dy) > CLICK_SLOP) gesture.moved = true;
    const world = this.toWorld(event.clientX, event.clientY);
    const delta = [world[0] - gesture.startWorld[0], world[1] - gesture.startWorld[1]];
    switch (gesture.kind) {
      case "pan":
        this.offset = [gesture.startOffset[0] + dx / this.scale, gesture.startOffset[1] + dy / this.scale];
        this.applyTransform();
        break;
      case "move":
      case "group-move":
        if (!gesture.moved) return;
        for (const [id, start] of gesture.starts) {
          const node = this.graph.getNode(id);
          node.pos = [Math.round(start[0] + delta[0]), Math.round(start[1] + delta[1])];
          this.viewOf(node)?.update();
        }
        if (gesture.kind === "group-move") {
          gesture.group.bounding = [Math.round(gesture.start[0] + delta[0]), Math.round(gesture.start[1] + delta[1]),
            gesture.start[2], gesture.start[3]];
          this.renderGroups();
        }
        this.scheduleLinks();
        break;
      case "resize": {
        const node = gesture.node;
        node.size = [Math.max(80, Math.round(gesture.startSize[0] + delta[0])),
          Math.max(0, Math.round(gesture.startHeight + delta[1]))];
        this.viewOf(node)?.update();
        this.scheduleLinks();
        break;
      }
      case "group-resize":
        gesture.group.bounding = [gesture.start[0], gesture.start[1],
          Math.max(100, Math.round(gesture.start[2] + delta[0])),
          Math.max(60, Math.round(gesture.start[3] + delta[1]))];
        this.renderGroups();
        break;
      case "box":
        this.updateBox(gesture, event);
        break;
      case "wire":
        this.updateWire(gesture, event);
        break;
      default:
    }
  }

  onPointerUp(event, cancelled = false) {
    const gesture = this.gesture;
    if (!gesture || event.pointerId !== gesture.pointerId) return;
    this.gesture = null;
    this.root.classList.remove(`gesture-${gesture.kind}`);
    if (this.root.hasPointerCapture(event.pointerId)) this.root.releasePointerCapture(event.pointerId);
    switch (gesture.kind) {
      case "pan":
        if (!gesture.moved) this.setSelection([]);
        else this.editor.viewChanged?.();
        break;
      case "move":
        if (gesture.moved) this.graph.changed("move", { nodes: [...gesture.starts.keys()] });
        else if (gesture.toggle && gesture.wasSelected) this.toggleSelected(gesture.node.id);
        else if (!gesture.toggle) this.setSelection([gesture.node.id]);
        break;
      case "group-move":
      case "group-resize":
        if (gesture.moved) this.graph.changed("group");
        break;
      case "resize":
        this.graph.changed("node", { node: gesture.node });
        break;
      case "box":
        this.selectionBox.hidden = true;
        break;
      case "wire":
        this.endWire(gesture, event, cancelled);
        break;
      default:
    }
  }

  onWheel(event) {
    const area = event.target.closest?.("textarea, .palette, .node-images");
    if (area && !event.ctrlKey && area.scrollHeight > area.clientHeight) return;
    event.preventDefault();
    const delta = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
    this.zoomAt(event.clientX, event.clientY, Math.exp(-delta * (event.ctrlKey ? 0.01 : 0.0015)));
    this.scheduleViewSave();
  }

  scheduleViewSave() {
    clearTimeout(this.viewSaveTimer);
    this.viewSaveTimer = setTimeout(() => this.editor.viewChanged?.(), 400);
  }

  onDoubleClick(event) {
    const target = event.target;
    const nodeEl = target.closest(".node");
    if (nodeEl) {
      if (target.closest(".node-title-text")) this.editor.renameNode(this.graph.getNode(nodeEl.dataset.nodeId));
      return;
    }
    const groupTitle = target.closest(".group-title");
    if (groupTitle) {
      this.editor.renameGroup(this.graph.groups[Number(groupTitle.parentElement.dataset.group)]);
      return;
    }
    if (target.closest(".wire-hit")) return;
    this.editor.openPalette({ at: this.toWorld(event.clientX, event.clientY), client: [event.clientX, event.clientY] });
  }

  onContextMenu(event) {
    if (isTyping(event.target)) return;
    event.preventDefault();
    const nodeEl = event.target.closest(".node");
    if (nodeEl) {
      const node = this.graph.getNode(nodeEl.dataset.nodeId);
      if (!this.selection.has(node.id)) this.setSelection([node.id]);
      this.editor.nodeMenu(node, event.clientX, event.clientY);
      return;
    }
    const groupEl = event.target.closest(".group");
    if (groupEl) {
      this.editor.groupMenu(this.graph.groups[Number(groupEl.dataset.group)], event.clientX, event.clientY);
      return;
    }
    this.editor.canvasMenu(this.toWorld(event.clientX, event.clientY), event.clientX, event.clientY);
  }

  updateBox(gesture, event) {
    const rect = this.root.getBoundingClientRect();
    const [x0, y0] = gesture.startClient;
    const left = Math.min(x0, event.clientX);
    const top = Math.min(y0, event.clientY);
    const width = Math.abs(event.clientX - x0);
    const height = Math.abs(event.clientY - y0);
    Object.assign(this.selectionBox.style, { left: `${left - rect.left}px`, top: `${top - rect.top}px`,
      width: `${width}px`, height: `${height}px` });
    this.selectionBox.hidden = false;
    const [wx0, wy0] = this.toWorld(left, top);
    const [wx1, wy1] = this.toWorld(left + width, top + height);
    const inside = [...this.views.values()].filter((view) => {
      const [x, y, w, h] = this.nodeBounds(view);
      return x < wx1 && x + w > wx0 && y < wy1 && y + h > wy0;
    }).map((view) => view.node.id);
    this.setSelection(new Set([...gesture.additive, ...inside]));
  }

  // ---- dragging wires ----------------------------------------------------------------------------------

  /** Start a wire from a socket; dragging from a connected input picks its wire up again. */
  beginWire(event, node, row) {
    const isOutput = row.classList.contains("output");
    let from;
    if (isOutput) {
      from = { side: "output", node, slot: Number(row.dataset.slot) };
    } else {
      const slotIndex = row.dataset.slot === undefined ? null : Number(row.dataset.slot);
      const linkId = slotIndex === null ? null : node.inputs[slotIndex]?.link;
      const link = linkId === null ? null : this.graph.links.get(linkId);
      const origin = link && this.graph.getNode(link.origin_id);
      if (origin) {
        this.graph.removeLink(link.id);
        from = { side: "output", node: origin, slot: link.origin_slot, detached: true };
      } else {
        const widget = row.dataset.kind === "widget" ? row.dataset.widget : null;
        from = { side: "input", node, slot: slotIndex, widget };
      }
    }
    from.type = from.side === "output" ? this.graph.outputType(from.node, from.slot) : row.dataset.type;
    this.begin(event, { kind: "wire", from });
    this.root.classList.add("wiring");
    this.markCompatibleSockets(from);
    this.updateWire(this.gesture, event);
  }

  markCompatibleSockets(from) {
    for (const row of this.root.querySelectorAll(".slot, .widget-row[data-kind=widget]")) {
      const nodeId = row.closest(".node").dataset.nodeId;
      const wantsOutput = from.side === "input";
      const isOutput = row.classList.contains("output");
      let ok = false;
      if (isOutput === wantsOutput && String(from.node.id) !== nodeId) {
        ok = isOutput ? typesCompatible(row.dataset.type, from.type) : typesCompatible(from.type, row.dataset.type);
      }
      row.classList.toggle("compatible", ok);
      row.classList.toggle("incompatible", !ok);
    }
  }

  clearWireMarks() {
    this.root.classList.remove("wiring");
    for (const row of this.root.querySelectorAll(".compatible, .incompatible, .drop-ok, .drop-bad")) {
      row.classList.remove("compatible", "incompatible", "drop-ok", "drop-bad");
    }
  }

  updateWire(gesture, event) {
    const { from } = gesture;
    const view = this.viewOf(from.node);
    const anchor = from.side === "output" ? view.socketPosition("output", from.slot)
      : view.socketPosition("input", from.slot ?? from.widget);
    const pointer = this.toWorld(event.clientX, event.clientY);
    this.dragPath.setAttribute("d", from.side === "output" ? wirePath(anchor, pointer) : wirePath(pointer, anchor));
    this.dragPath.style.stroke = typeColor(from.type);
    this.dragPath.classList.add("active");
    for (const row of this.root.querySelectorAll(".drop-ok, .drop-bad")) row.classList.remove("drop-ok", "drop-bad");
    const row = this.rowAt(event.clientX, event.clientY);
    if (row) {
      const check = this.checkDrop(from, row);
      row.classList.add(check.ok ? "drop-ok" : "drop-bad");
    }
  }

  rowAt(clientX, clientY) {
    const hit = this.doc.elementFromPoint(clientX, clientY);
    return hit?.closest?.(".slot, .widget-row[data-kind=widget]") ?? null;
  }

  /** Whether the dragged wire may end on `row`: {ok, reason, connect()}. */
  checkDrop(from, row) {
    const node = this.graph.getNode(row.closest(".node").dataset.nodeId);
    const isOutput = row.classList.contains("output");
    if (from.side === "output") {
      if (isOutput) return { ok: false, reason: "connect an output to an input" };
      const widget = row.dataset.kind === "widget" ? row.dataset.widget : null;
      const slot = row.dataset.slot === undefined ? null : Number(row.dataset.slot);
      const check = widget ? this.graph.canConnectWidget(from.node, from.slot, node, widget)
        : this.graph.canConnect(from.node, from.slot, node, slot);
      return { ...check, connect: () => (widget ? this.graph.connectWidget(from.node, from.slot, node, widget)
        : this.graph.connect(from.node, from.slot, node, slot)) };
    }
    if (!isOutput) return { ok: false, reason: "connect an input to an output" };
    const originSlot = Number(row.dataset.slot);
    const check = from.widget ? this.graph.canConnectWidget(node, originSlot, from.node, from.widget)
      : this.graph.canConnect(node, originSlot, from.node, from.slot);
    return { ...check, connect: () => (from.widget ? this.graph.connectWidget(node, originSlot, from.node, from.widget)
      : this.graph.connect(node, originSlot, from.node, from.slot)) };
  }

  endWire(gesture, event, cancelled) {
    const { from } = gesture;
    this.dragPath.classList.remove("active");
    this.clearWireMarks();
    if (cancelled) return;
    const [clientX, clientY] = [event.clientX, event.clientY];
    const row = this.rowAt(clientX, clientY);
    if (row) {
      const check = this.checkDrop(from, row);
      if (check.ok) this.tryConnect(check.connect, clientX, clientY);
      else if (String(row.closest(".node").dataset.nodeId) !== String(from.node.id) || !from.detached) {
        showHint(this.doc, `✕ ${check.reason}`, clientX, clientY);
      }
      return;
    }
    const nodeEl = this.doc.elementFromPoint(clientX, clientY)?.closest?.(".node");
    if (nodeEl) {
      const node = this.graph.getNode(nodeEl.dataset.nodeId);
      if (node.id === from.node.id) return;
      const connect = this.firstCompatible(from, node);
      if (connect) this.tryConnect(connect, clientX, clientY);
      else {
        const side = from.side === "output" ? "input" : "output";
        showHint(this.doc, `✕ ${this.editor.nodeTitle(node)} has no ${side} for ${from.type}`, clientX, clientY);
      }
      return;
    }
    if (!gesture.moved && !from.detached) return;
    this.editor.openPalette({
      at: this.toWorld(clientX, clientY), client: [clientX, clientY],
      wire: { side: from.side, type: from.type, widget: Boolean(from.widget) },
      onCreate: (node) => {
        const connect = this.firstCompatible(from, node);
        if (connect) this.tryConnect(connect, clientX, clientY);
      },
    });
  }

  /** How to wire `from` to the first fitting slot of `node` (a free one first), or null. */
  firstCompatible(from, node) {
    const candidates = [];
    if (from.side === "output") {
      node.inputs.forEach((slot, index) => {
        const check = this.graph.canConnect(from.node, from.slot, node, index);
        if (check.ok) candidates.push({ free: slot.link === null, widget: Boolean(slot.widget),
          connect: () => this.graph.connect(from.node, from.slot, node, index) });
      });
    } else {
      node.outputs.forEach((slot, index) => {
        const check = from.widget ? this.graph.canConnectWidget(node, index, from.node, from.widget)
          : this.graph.canConnect(node, index, from.node, from.slot);
        if (check.ok) candidates.push({ free: true, widget: false,
          connect: () => (from.widget ? this.graph.connectWidget(node, index, from.node, from.widget)
            : this.graph.connect(node, index, from.node, from.slot)) });
      });
    }
    candidates.sort((a, b) => (b.free - a.free) || (a.widget - b.widget));
    return candidates[0]?.connect ?? null;
  }

  tryConnect(connect, clientX, clientY) {
    try {
      connect();
    } catch (error) {
      if (!(error instanceof GraphError)) throw error;
      showHint(this.doc, `✕ ${error.message}`, clientX, clientY);
    }
  }
}

/** A wire from an output at `from` to an input at `to`, as an SVG path. */
function wirePath(from, to) {
  const bend = Math.max(40, Math.abs(to[0] - from[0]) * 0.5);
  return `M ${from[0]} ${from[1]} C ${from[0] + bend} ${from[1]}, ${to[0] - bend} ${to[1]}, ${to[0]} ${to[1]}`;
}

export function isTyping(target) {
  return Boolean(target?.closest?.("input, textarea, select, [contenteditable=true]"));
}
