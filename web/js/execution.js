/**
 * What the server says about running prompts, shown on the page: the running node highlighted with its
 * progress, latent previews and output images on their nodes, validation and execution errors on the nodes
 * and inputs they name, the queue size, the page's progress bar and the connection state.
 *
 * It listens to the websocket (a SocketClient) and reads the canvas and graph through `editor`; it never
 * changes the graph, so errors and images survive undo and reload of the drawing (they are put back on each
 * node view as it is drawn).
 */
import { SocketClient } from "./socket.js";

/** The graph node an executed id belongs to: "5:2" (inside a subgraph instance) belongs to node 5. */
function graphNodeId(id) {
  return String(id).split(":")[0];
}

export class ExecutionMonitor {
  constructor(doc, editor) {
    this.doc = doc;
    this.editor = editor;
    this.nodeImages = new Map();
    this.nodeErrors = new Map();
    this.running = { promptId: null, nodeId: null };
    this.queueRemaining = 0;
    this.previewUrl = null;
  }

  connect(url) {
    const socket = new SocketClient({ url });
    this.socket = socket;
    const on = (type, handler) => socket.addEventListener(type, (event) => handler(event.detail));
    on("open", () => this.setConnected(true));
    on("close", () => this.setConnected(false));
    on("status", (data) => this.onStatus(data));
    on("execution_start", (data) => this.onExecutionStart(data));
    on("executing", (data) => this.onExecuting(data));
    on("progress", (data) => this.onProgress(data));
    on("executed", (data) => this.onExecuted(data));
    on("execution_error", (data) => this.onExecutionError(data));
    on("execution_interrupted", () => this.onInterrupted());
    on("execution_success", () => this.editor.queuePanel.scheduleRefresh());
    on("preview", (blob) => this.onPreview(blob));
    socket.connect();
  }

  viewOf(nodeId) {
    return this.editor.view.viewOf(graphNodeId(nodeId));
  }

  /** Put a freshly drawn node's images, errors and running state back. */
  decorate(view) {
    const id = String(view.node.id);
    if (this.nodeImages.has(id)) view.setImages(this.nodeImages.get(id));
    if (this.nodeErrors.has(id)) view.setErrors(this.nodeErrors.get(id));
    if (this.running.nodeId === id) view.setRunning(true);
  }

  /** A different workflow was loaded: images and errors of the old one no longer apply. */
  forgetNodes() {
    this.nodeImages.clear();
    this.nodeErrors.clear();
  }

  // ---- errors on nodes ----------------------------------------------------------------------------------

  /** A 400 from POST /prompt: each node's errors on the node and its inputs, the summary in a toast. */
  showValidationErrors(body) {
    this.clearErrors();
    const nodeErrors = body.node_errors ?? {};
    const names = [];
    for (const [nodeId, entry] of Object.entries(nodeErrors)) {
      const errors = (entry.errors ?? []).map((error) => ({
        message: error.message, details: error.details ?? "", input_name: error.extra_info?.input_name ?? null,
      }));
      this.setNodeErrors(nodeId, errors);
      const node = this.editor.graph.getNode(graphNodeId(nodeId));
      names.push(node ? this.editor.nodeTitle(node) : `node ${nodeId}`);
    }
    const error = body.error ?? {};
    const summary = names.length ? `${error.message ?? "Prompt has errors"}: ${names.join(", ")}`
      : (error.message ?? "The prompt was refused");
    this.editor.toast(summary, { kind: "error", details: names.length ? "" : (error.details ?? ""), timeout: 10000 });
    const first = Object.keys(nodeErrors)[0];
    if (first) this.revealNode(first);
  }

  setNodeErrors(nodeId, errors) {
    const id = graphNodeId(nodeId);
    if (errors.length) this.nodeErrors.set(id, errors);
    else this.nodeErrors.delete(id);
    this.viewOf(id)?.setErrors(errors);
  }

  clearErrors(nodeId = null) {
    const ids = nodeId === null ? [...this.nodeErrors.keys()] : [String(nodeId)];
    for (const id of ids) this.setNodeErrors(id, []);
  }

  /** Pan so a node is in view (keeping the zoom), unless it already is. */
  revealNode(nodeId) {
    const view = this.viewOf(nodeId);
    if (!view) return;
    const canvasView = this.editor.view;
    const rect = view.el.getBoundingClientRect();
    const canvas = canvasView.root.getBoundingClientRect();
    const visible = rect.right > canvas.left && rect.left < canvas.right && rect.bottom > canvas.top
      && rect.top < canvas.bottom;
    if (visible) return;
    const { pos } = view.node;
    canvasView.offset = [canvas.width / canvasView.scale / 2 - pos[0] - view.el.offsetWidth / 2,
      canvas.height / canvasView.scale / 2 - pos[1]];
    canvasView.applyTransform();
  }

  // ---- server events ------------------------------------------------------------------------------------

  setConnected(connected) {
    const banner = this.doc.getElementById("connection-banner");
    if (connected) {
      if (banner.dataset.reason === "socket") banner.hidden = true;
      this.editor.queuePanel.scheduleRefresh();
      return;
    }
    banner.dataset.reason = "socket";
    banner.textContent = "Lost the connection to the server; reconnecting…";
    banner.hidden = false;
  }

  onStatus(data) {
    this.queueRemaining = data.status?.exec_info?.queue_remaining ?? 0;
    this.doc.getElementById("queue-size").textContent = String(this.queueRemaining);
    this.doc.getElementById("interrupt-button").disabled = this.queueRemaining === 0 && !this.running.nodeId;
    if (this.queueRemaining === 0 && !this.running.nodeId) this.setStatus("Idle", null);
    this.editor.queuePanel.scheduleRefresh();
  }

  onExecutionStart(data) {
    this.running = { promptId: data.prompt_id, nodeId: null };
    this.clearErrors();
    this.doc.getElementById("interrupt-button").disabled = false;
    this.setStatus("Starting…", 0);
  }

  onExecuting(data) {
    if (this.running.nodeId) this.viewOf(this.running.nodeId)?.setRunning(false);
    if (data.node === null || data.node === undefined) {
      this.running = { promptId: null, nodeId: null };
      this.doc.getElementById("interrupt-button").disabled = this.queueRemaining === 0;
      this.setStatus(this.queueRemaining ? `Queued: ${this.queueRemaining}` : "Idle", null);
      this.editor.queuePanel.scheduleRefresh();
      return;
    }
    const nodeId = graphNodeId(data.display_node ?? data.node);
    this.running = { promptId: data.prompt_id, nodeId };
    this.doc.getElementById("interrupt-button").disabled = false;
    const view = this.viewOf(nodeId);
    view?.setRunning(true);
    this.setStatus(`Running ${view ? this.editor.nodeTitle(view.node) : data.node}`, null);
  }

  onProgress(data) {
    const fraction = data.max ? data.value / data.max : 0;
    const view = this.viewOf(data.node ?? this.running.nodeId);
    view?.setProgress(fraction);
    const title = view ? this.editor.nodeTitle(view.node) : data.node;
    this.setStatus(`Running ${title} · ${data.value}/${data.max}`, fraction);
  }

  onExecuted(data) {
    const images = data.output?.images;
    if (Array.isArray(images) && images.length) this.showNodeImages(data.display_node ?? data.node, images);
  }

  showNodeImages(nodeId, images) {
    const id = graphNodeId(nodeId);
    const shown = images.map((image) => ({ url: this.editor.api.viewUrl(image), name: image.filename }));
    this.nodeImages.set(id, shown);
    this.viewOf(id)?.setImages(shown);
  }

  /** A latent preview (binary frame) belongs to the node that is running. */
  onPreview(blob) {
    const view = this.running.nodeId && this.viewOf(this.running.nodeId);
    if (!view) return;
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.previewUrl = URL.createObjectURL(blob);
    view.setPreview(this.previewUrl);
  }

  onExecutionError(data) {
    const nodeId = data.node_id === null || data.node_id === undefined ? null : graphNodeId(data.node_id);
    const node = nodeId && this.editor.graph.getNode(nodeId);
    const message = data.exception_message ?? "the node failed";
    if (nodeId) this.setNodeErrors(nodeId, [{ message, details: data.exception_type ?? "" }]);
    this.editor.toast(`${node ? this.editor.nodeTitle(node) : data.node_type ?? "The prompt"} failed: ${message}`,
      { kind: "error", details: (data.traceback ?? []).slice(-3).join(""), timeout: 12000 });
    if (nodeId) this.revealNode(nodeId);
  }

  onInterrupted() {
    this.editor.toast("Interrupted", { kind: "info", timeout: 3000 });
    this.editor.queuePanel.scheduleRefresh();
  }

  setStatus(text, fraction) {
    this.doc.getElementById("status-text").textContent = text;
    const bar = this.doc.getElementById("page-progress-bar");
    bar.parentElement.classList.toggle("active", fraction !== null);
    bar.style.width = fraction === null ? "0" : `${Math.round(fraction * 100)}%`;
  }
}
