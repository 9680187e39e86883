/**
 * One node on the canvas: its DOM element (title, input and output sockets, widgets, image upload, output
 * images, progress, errors) and where its sockets are, for drawing wires.
 *
 * A NodeView reads its GraphNode and writes edits back through the graph; what happens around it (uploads,
 * the mask editor, the lightbox, extensions' widgets) it asks of `editor`. It does not handle dragging or
 * wiring: the canvas does, reading the `data-*` attributes set here.
 */
import { TITLE_HEIGHT, MODE_BYPASSED, MODE_MUTED } from "./graph.js";
import { VIRTUAL_TYPES } from "./node_defs.js";
import { isDemoModel } from "./default_workflow.js";
import { element } from "./dialogs.js";
import { createWidget } from "./widgets.js";
import { typeColor } from "./type_colors.js";

const NOTE_SPEC = { type: "STRING", options: { multiline: true }, tooltip: "" };

export class NodeView {
  constructor(doc, node, editor) {
    this.doc = doc;
    this.node = node;
    this.editor = editor;
    this.controls = new Map();
    this.socketCache = null;
    this.images = [];
    this.preview = null;
    this.errors = [];
    this.el = element(doc, "div", "node");
    this.render();
  }

  get graph() {
    return this.editor.graph;
  }

  get def() {
    return this.graph.defs.get(this.node.type);
  }

  /** The input spec a widget edits (a primitive's comes from the widget it feeds). */
  specFor(widget) {
    const { node } = this;
    if (node.type === VIRTUAL_TYPES.Note || node.type === VIRTUAL_TYPES.MarkdownNote) return NOTE_SPEC;
    if (node.type === VIRTUAL_TYPES.Primitive) return this.graph.primitiveTarget(node)?.spec ?? null;
    return this.def?.input(widget.kind === "widget" ? widget.name : widget.of) ?? null;
  }

  // ---- building --------------------------------------------------------------------------------------

  render() {
    const { doc, node, el } = this;
    el.replaceChildren();
    this.controls.clear();
    this.socketCache = null;
    el.dataset.nodeId = node.id;
    el.dataset.type = node.type;
    el.classList.toggle("reroute", node.type === VIRTUAL_TYPES.Reroute);
    el.classList.toggle("note", node.type === VIRTUAL_TYPES.Note || node.type === VIRTUAL_TYPES.MarkdownNote);
    const subgraph = this.graph.subgraphName(node.type);
    el.classList.toggle("subgraph", Boolean(subgraph));
    el.classList.toggle("unknown-type", !this.def && !subgraph);

    this.titleEl = element(doc, "div", "node-title");
    const collapse = element(doc, "button", "collapse-toggle", "▾");
    collapse.title = "Collapse or expand";
    collapse.type = "button";
    collapse.addEventListener("click", () => this.editor.toggleCollapsed(node));
    this.titleText = element(doc, "span", "node-title-text");
    this.badge = element(doc, "span", "node-badge");
    this.titleEl.append(collapse, this.titleText, this.badge);
    this.titleEl.title = this.def?.description ?? (subgraph ? `Subgraph: ${subgraph} (edit it in ComfyUI; it runs here)`
      : `${node.type} is not installed on the server`);

    this.body = element(doc, "div", "node-body");
    const slots = element(doc, "div", "node-slots");
    this.inputsEl = element(doc, "div", "node-inputs");
    this.outputsEl = element(doc, "div", "node-outputs");
    slots.append(this.inputsEl, this.outputsEl);
    this.widgetsEl = element(doc, "div", "node-widgets");
    this.uploadEl = element(doc, "div", "node-upload");
    this.imagesEl = element(doc, "div", "node-images");
    this.noticeEl = element(doc, "div", "node-notice");
    this.errorEl = element(doc, "div", "node-error");
    this.errorEl.setAttribute("role", "alert");
    this.body.append(slots, this.widgetsEl, this.uploadEl, this.imagesEl, this.noticeEl, this.errorEl);

    const progress = element(doc, "div", "node-progress");
    this.progressBar = element(doc, "div", "node-progress-bar");
    progress.append(this.progressBar);
    const resize = element(doc, "div", "node-resize");
    resize.title = "Drag to resize";
    el.append(this.titleEl, this.body, progress, resize);

    this.renderSlots();
    this.renderWidgets();
    this.renderUpload();
    this.renderImages();
    this.update();
    this.shape = this.shapeKey();
    if (node.size[1] <= 0) requestAnimationFrame(() => this.recordNaturalHeight());
  }

  /** A new node takes the height its content needs; saved files then carry a real size. */
  recordNaturalHeight() {
    if (this.node.size[1] <= 0 && this.el.isConnected) this.node.size[1] = this.body.offsetHeight;
  }

  /** What decides the node's layout: when it changes, the node is rendered again rather than updated. */
  shapeKey() {
    const { node } = this;
    return JSON.stringify([node.inputs.map((slot) => [slot.name, slot.widget?.name ?? null]), node.outputs.length,
      (node.widgets ?? []).map((widget) => `${widget.kind}:${widget.name}`), Boolean(this.def)]);
  }

  renderSlots() {
    const { doc, node } = this;
    const shownWidgets = new Set((node.widgets ?? []).filter((w) => w.kind === "widget").map((w) => w.name));
    this.inputsEl.replaceChildren();
    node.inputs.forEach((slot, index) => {
      if (slot.widget && shownWidgets.has(slot.widget.name)) return;
      const row = element(doc, "div", "slot input");
      row.dataset.slot = index;
      row.dataset.name = slot.widget?.name ?? slot.name;
      const socket = element(doc, "span", "socket");
      const label = element(doc, "span", "slot-label", slot.label || slot.localized_name || slot.name);
      const spec = this.def?.input(row.dataset.name);
      if (spec?.tooltip) row.title = spec.tooltip;
      row.append(socket, label);
      this.inputsEl.append(row);
    });
    this.outputsEl.replaceChildren();
    node.outputs.forEach((slot, index) => {
      const row = element(doc, "div", "slot output");
      row.dataset.slot = index;
      const label = element(doc, "span", "slot-label", slot.label || slot.localized_name || slot.name);
      const socket = element(doc, "span", "socket");
      const tooltip = this.def?.outputs[index]?.tooltip;
      if (tooltip) row.title = tooltip;
      row.append(label, socket);
      this.outputsEl.append(row);
    });
  }

  renderWidgets() {
    const { doc, node } = this;
    this.widgetsEl.replaceChildren();
    if (!node.widgets && node.rawWidgetsValues !== undefined) {
      const values = Array.isArray(node.rawWidgetsValues) ? node.rawWidgetsValues : [node.rawWidgetsValues];
      for (const value of values) {
        const text = typeof value === "object" ? JSON.stringify(value) : String(value);
        this.widgetsEl.append(element(doc, "div", "widget readonly-widget", text));
      }
      return;
    }
    for (const widget of node.widgets ?? []) {
      const spec = this.specFor(widget);
      const control = createWidget(doc, {
        widget, spec,
        custom: widget.kind === "widget" && spec ? this.editor.customWidget(node.type, widget.name, spec) : null,
        node,
        onError: (error) => this.editor.reportExtensionError("widget", widget.name, error),
        onChange: (value) => this.editor.editWidget(node, widget, value),
      });
      if (!control) continue;
      const row = element(doc, "div", "widget-row");
      row.dataset.widget = widget.kind === "widget" ? widget.name : widget.of;
      row.dataset.kind = widget.kind;
      if (spec?.tooltip) row.title = spec.tooltip;
      if (widget.kind === "widget" && node.type !== VIRTUAL_TYPES.Note && node.type !== VIRTUAL_TYPES.MarkdownNote) {
        const socket = element(doc, "span", "socket widget-socket");
        const input = node.widgetInput(widget.name);
        if (input) row.dataset.slot = input.index;
        row.append(socket);
      }
      row.append(control.element);
      this.widgetsEl.append(row);
      this.controls.set(widget, control);
    }
  }

  renderUpload() {
    const { doc, node } = this;
    this.uploadEl.replaceChildren();
    const upload = this.def?.uploadOption;
    if (!upload || upload.option !== "image_upload") return;
    const buttons = element(doc, "div", "upload-buttons");
    const choose = element(doc, "button", "upload-button", "Upload image…");
    choose.type = "button";
    const picker = element(doc, "input", "upload-input");
    picker.type = "file";
    picker.accept = "image/*";
    picker.hidden = true;
    choose.addEventListener("click", () => picker.click());
    picker.addEventListener("change", () => {
      if (picker.files[0]) this.editor.uploadToNode(node, picker.files[0]);
      picker.value = "";
    });
    const mask = element(doc, "button", "mask-button", "Edit mask…");
    mask.type = "button";
    mask.addEventListener("click", () => this.editor.editMask(node));
    buttons.append(choose, mask, picker);
    this.inputPreview = element(doc, "img", "input-preview");
    this.inputPreview.alt = "the selected image";
    this.inputPreview.addEventListener("click", () => this.editor.openImages([this.inputImage()], 0));
    this.uploadEl.append(buttons, this.inputPreview);
    this.uploadInput = upload.input;
  }

  /** The image an upload node has selected, as {url, name}. */
  inputImage() {
    const name = this.node.widget(this.uploadInput)?.value;
    if (typeof name !== "string" || !name) return null;
    return { name, url: this.editor.inputImageUrl(name) };
  }

  renderImages() {
    const { doc } = this;
    this.imagesEl.replaceChildren();
    const shown = this.preview ? [{ url: this.preview, name: "preview", preview: true }] : this.images;
    this.imagesEl.hidden = shown.length === 0;
    shown.forEach((image, index) => {
      const img = element(doc, "img", image.preview ? "preview-image" : "output-image");
      img.src = image.url;
      img.alt = image.name;
      img.loading = "lazy";
      img.draggable = false;
      if (!image.preview) img.addEventListener("click", () => this.editor.openImages(this.images, index));
      this.imagesEl.append(img);
    });
    this.imagesEl.classList.toggle("grid", shown.length > 1);
    this.socketCache = null;
  }

  // ---- updating in place -------------------------------------------------------------------------------

  update() {
    const { node, el } = this;
    const pos = node.pos;
    el.style.left = `${pos[0]}px`;
    el.style.top = `${pos[1] - this.titleHeight}px`;
    el.style.width = `${node.size[0]}px`;
    this.body.style.minHeight = node.type === VIRTUAL_TYPES.Reroute ? "" : `${Math.max(0, node.size[1])}px`;
    el.classList.toggle("collapsed", Boolean(node.flags.collapsed));
    el.classList.toggle("muted", node.mode === MODE_MUTED);
    el.classList.toggle("bypassed", node.mode === MODE_BYPASSED);
    if (node.color) el.style.setProperty("--node-title-color", node.color);
    else el.style.removeProperty("--node-title-color");
    if (node.bgcolor) el.style.setProperty("--node-color", node.bgcolor);
    else el.style.removeProperty("--node-color");
    this.titleText.textContent = this.title();
    this.badge.textContent = node.mode === MODE_MUTED ? "muted" : node.mode === MODE_BYPASSED ? "bypassed" : "";
    this.updateSlots();
    for (const [widget, control] of this.controls) {
      control.setValue(widget.value);
      const input = widget.kind === "widget" ? node.widgetInput(widget.name) : null;
      const linked = Boolean(input && input.slot.link !== null);
      control.setDisabled(linked);
      control.element.closest(".widget-row")?.classList.toggle("linked", linked);
    }
    if (this.inputPreview) {
      const image = this.inputImage();
      this.inputPreview.hidden = !image;
      if (image && this.inputPreview.dataset.name !== image.name) {
        this.inputPreview.src = image.url;
        this.inputPreview.dataset.name = image.name;
      }
    }
    this.updateNotice();
    this.socketCache = null;
  }

  title() {
    const { node } = this;
    if (node.title) return node.title;
    if (node.type === VIRTUAL_TYPES.Primitive) return this.graph.primitiveTarget(node)?.name ?? "Primitive";
    return this.def?.displayName ?? this.graph.subgraphName(node.type) ?? node.type;
  }

  updateSlots() {
    for (const row of this.el.querySelectorAll(".slot.input, .widget-row[data-kind=widget]")) {
      const slotIndex = row.dataset.slot;
      const slot = slotIndex === undefined ? null : this.node.inputs[Number(slotIndex)];
      const type = slot ? this.graph.inputType(this.node, Number(slotIndex))
        : this.specFor({ kind: "widget", name: row.dataset.widget })?.type;
      row.dataset.type = type ?? "*";
      row.classList.toggle("connected", Boolean(slot && slot.link !== null));
      row.querySelector(".socket")?.style.setProperty("--socket-color", typeColor(type));
    }
    for (const row of this.outputsEl.children) {
      const index = Number(row.dataset.slot);
      const type = this.graph.outputType(this.node, index);
      row.dataset.type = type;
      row.classList.toggle("connected", this.node.outputs[index].links.length > 0);
      row.querySelector(".socket").style.setProperty("--socket-color", typeColor(type));
    }
  }

  updateNotice() {
    const demo = (this.node.widgets ?? []).find((widget) => widget.kind === "widget" && isDemoModel(widget.value)
      && this.specFor(widget)?.type === "COMBO");
    this.noticeEl.hidden = !demo;
    this.noticeEl.textContent = demo ? "Demo model: random weights, so images are noise." : "";
    this.el.classList.toggle("demo-model", Boolean(demo));
  }

  // ---- execution state ---------------------------------------------------------------------------------

  setRunning(running) {
    this.el.classList.toggle("running", running);
    if (!running) this.setProgress(null);
  }

  setProgress(fraction) {
    this.el.classList.toggle("has-progress", fraction !== null);
    this.progressBar.style.width = fraction === null ? "0" : `${Math.round(fraction * 100)}%`;
  }

  setImages(images) {
    this.images = images;
    this.preview = null;
    this.renderImages();
  }

  setPreview(url) {
    this.preview = url;
    this.renderImages();
  }

  /** Show errors: [{message, details, input_name}] (empty clears them). */
  setErrors(errors) {
    this.errors = errors;
    this.el.classList.toggle("has-error", errors.length > 0);
    this.errorEl.replaceChildren();
    for (const row of this.el.querySelectorAll(".input-error")) {
      row.classList.remove("input-error");
      row.removeAttribute("data-error");
    }
    for (const error of errors) {
      const text = error.input_name ? `${error.input_name}: ${error.message}` : error.message;
      const line = element(this.doc, "div", "node-error-line", text);
      if (error.details) line.title = error.details;
      this.errorEl.append(line);
      if (error.details) this.errorEl.append(element(this.doc, "div", "node-error-details", error.details));
      if (!error.input_name) continue;
      const row = this.el.querySelector(`.widget-row[data-widget="${CSS.escape(error.input_name)}"], `
        + `.slot.input[data-name="${CSS.escape(error.input_name)}"]`);
      if (row) {
        row.classList.add("input-error");
        row.dataset.error = error.message;
      }
    }
    this.socketCache = null;
  }

  // ---- geometry ----------------------------------------------------------------------------------------

  /** How far above `pos` the element starts: the title bar, which reroutes do not have (as in LiteGraph). */
  get titleHeight() {
    return this.node.type === VIRTUAL_TYPES.Reroute ? 0 : TITLE_HEIGHT;
  }

  /** World position of an input socket (by slot index, or a widget's by name) or output socket. */
  socketPosition(side, key) {
    const { node } = this;
    if (node.flags.collapsed) {
      const y = node.pos[1] - TITLE_HEIGHT / 2;
      return side === "output" ? [node.pos[0] + this.el.offsetWidth, y] : [node.pos[0], y];
    }
    if (!this.socketCache) this.socketCache = new Map();
    const cacheKey = `${side}:${key}`;
    if (!this.socketCache.has(cacheKey)) this.socketCache.set(cacheKey, this.measureSocket(side, key));
    const offset = this.socketCache.get(cacheKey);
    if (!offset) return [node.pos[0], node.pos[1]];
    return [node.pos[0] + offset[0], node.pos[1] - this.titleHeight + offset[1]];
  }

  measureSocket(side, key) {
    const selector = side === "output" ? `.slot.output[data-slot="${key}"] .socket`
      : typeof key === "string" ? `.widget-row[data-widget="${CSS.escape(key)}"] .socket`
        : `.slot.input[data-slot="${key}"] .socket, .widget-row[data-slot="${key}"] .socket`;
    const socket = this.el.querySelector(selector);
    if (!socket || socket.offsetParent === null) return null;
    let x = socket.offsetWidth / 2;
    let y = socket.offsetHeight / 2;
    for (let current = socket; current && current !== this.el; current = current.offsetParent) {
      x += current.offsetLeft + (current.offsetParent?.clientLeft ?? 0);
      y += current.offsetTop + (current.offsetParent?.clientTop ?? 0);
    }
    return [x, y];
  }

  invalidateGeometry() {
    this.socketCache = null;
  }
}
