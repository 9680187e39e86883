/**
 * The editor application: owns the graph, the canvas, the panels and the connections to the server, and
 * turns user commands (toolbar, keys, menus) into graph edits and API calls.
 *
 * It is the one place that knows how the pieces fit: graph changes are drawn by the canvas, recorded for
 * undo and autosaved; server events light up nodes; validation errors land on the nodes they name. The
 * pieces themselves know nothing of each other. One App per page; everything it uses is passed in or
 * made here, so a test can make its own.
 */
import { ApiError } from "./api.js";
import { CanvasView, isTyping } from "./canvas_view.js";
import { askText, contextMenu, element, lightbox, toast } from "./dialogs.js";
import { defaultWorkflow, isDemoModel } from "./default_workflow.js";
import { ExecutionMonitor } from "./execution.js";
import { ExtensionRegistry, loadExtensions } from "./extensions.js";
import { Graph, MODE_ALWAYS, MODE_BYPASSED, MODE_MUTED, TITLE_HEIGHT } from "./graph.js";
import { showHelp } from "./help.js";
import { MaskEditor } from "./mask_editor.js";
import { canvasMenuItems, groupMenuItems, linkMenuItems, nodeMenuItems, workflowMenuItems } from "./menus.js";
import { saveToServer, showServerWorkflows } from "./server_workflows.js";
import { NodeDefs } from "./node_defs.js";
import { NodePalette } from "./palette.js";
import { WorkflowStore, downloadJson, readWorkflowFile, workflowName } from "./persistence.js";
import { QueuePanel } from "./queue_panel.js";
import { commandFor } from "./shortcuts.js";
import { UndoStack } from "./undo.js";
import { valueAfterGenerate } from "./widgets.js";
import { apiToEditor, editorToApi } from "./workflow_api.js";

const COMMIT_DELAY_MS = 200;
/** Changes that come in bursts (typing, dragging): recorded as one undo step after a pause. */
const CONTINUOUS_CHANGES = new Set(["widget", "move", "node"]);
const CLIPBOARD_KEY = "nodeflow.clipboard";
const CLIENT_ID_KEY = "nodeflow.clientId";

export class App {
  constructor({ doc, win, api, storage, sessionStorage, socketUrl }) {
    this.doc = doc;
    this.win = win;
    this.api = api;
    this.storage = storage;
    this.socketUrl = socketUrl;
    this.clientId = sessionStorage.getItem(CLIENT_ID_KEY) ?? crypto.randomUUID().replaceAll("-", "");
    sessionStorage.setItem(CLIENT_ID_KEY, this.clientId);
    this.store = new WorkflowStore(storage);
    this.undoStack = new UndoStack(100);
    this.extensions = new ExtensionRegistry(this);
    this.defs = new NodeDefs({});
    this.templates = [];
    this.graph = new Graph(this.defs);
    this.commitTimer = 0;
    this.queueing = false;
    this.name = "Untitled";
  }

  // ---- start ---------------------------------------------------------------------------------------------

  async start() {
    const doc = this.doc;
    this.view = new CanvasView(doc, doc.getElementById("canvas"), this);
    this.palette = new NodePalette(doc, () => this.defs);
    this.queuePanel = new QueuePanel(doc, doc.getElementById("queue-panel"), this);
    this.maskEditor = new MaskEditor(doc);
    this.execution = new ExecutionMonitor(doc, this);
    this.graph.addEventListener("change", (event) => this.onGraphChange(event.detail));
    this.bindToolbar();
    this.bindKeys();
    try {
      await this.loadDefinitions();
    } catch (error) {
      this.showStartupError(error);
      return;
    }
    this.restoreWorkflow();
    this.templates = await this.api.workflowTemplates().catch(() => []);
    this.execution.connect(this.socketUrl(this.clientId));
    await this.startExtensions();
    doc.body.dataset.ready = "true";
  }

  async loadDefinitions() {
    const info = await this.api.objectInfo();
    this.defs = new NodeDefs(info);
    this.graph.defs = this.defs;
    this.updateBanners();
  }

  showStartupError(error) {
    const banner = this.doc.getElementById("connection-banner");
    banner.hidden = false;
    banner.textContent = `Could not load the node definitions from the server: ${error.message}. `;
    const retry = element(this.doc, "button", "", "Retry");
    retry.addEventListener("click", () => this.win.location.reload());
    banner.append(retry);
  }

  restoreWorkflow() {
    const saved = this.store.load();
    if (saved) {
      try {
        this.loadWorkflow(saved.workflow, saved.name, { fit: false, undoable: false });
        return;
      } catch (error) {
        this.toast(`The autosaved workflow could not be restored: ${error.message}`, { kind: "error" });
      }
    }
    this.loadWorkflow(defaultWorkflow(this.defs), "Untitled", { undoable: false });
  }

  async startExtensions() {
    this.win.nodeflow = { app: this, register: (fn) => fn(this.extensions.apiFor("page")) };
    let urls = [];
    try {
      urls = await this.api.extensions();
    } catch (error) {
      this.toast(`Could not list the plugins' extensions: ${error.message}`, { kind: "error" });
    }
    const failures = await loadExtensions(urls, this.extensions);
    for (const { url, error } of failures) this.reportExtensionError(url, "import", error);
    await this.reportFailedPlugins();
  }

  /** Tell the user which node packs did not load and what they miss, so their nodes' absence is explained. */
  async reportFailedPlugins() {
    let failed = [];
    try {
      failed = await this.api.failedPlugins();
    } catch (error) {
      this.toast(`Could not list the node packs: ${error.message}`, { kind: "error" });
    }
    for (const record of failed) {
      const reason = record.missing ? `it needs ${record.missing}, which nodeflow does not provide`
        : String(record.error ?? "").trim().split("\n").pop();
      this.toast(`Node pack ${record.name} could not load: ${reason}`, { kind: "error", details: record.error ?? "",
                                                                         timeout: 15000 });
    }
  }

  /** An extension registered a widget: draw the nodes again so it is used. */
  extensionsChanged() {
    if (this.view && this.graph.nodes.size) this.view.rebuild();
  }

  reportExtensionError(name, hook, error) {
    console.error(`extension ${name} failed in ${hook}`, error);
    this.toast(`Extension ${name} failed (${hook}): ${error?.message ?? error}`, { kind: "error" });
  }

  // ---- graph changes: drawing, undo, autosave -------------------------------------------------------------

  onGraphChange(detail) {
    this.view.onGraphChange(detail);
    if (detail.what === "widget" && detail.node) this.execution.clearErrors(detail.node.id);
    this.updateBanners();
    this.scheduleCommit(CONTINUOUS_CHANGES.has(detail.what));
  }

  /**
   * Record the change: a discrete edit at the end of the command that made it (so each command is one undo
   * step), a burst of typing or dragging after a pause.
   */
  scheduleCommit(continuous) {
    clearTimeout(this.commitTimer);
    if (continuous) {
      this.commitTimer = setTimeout(() => this.commit(), COMMIT_DELAY_MS);
      return;
    }
    this.commitTimer = -1;
    queueMicrotask(() => {
      if (this.commitTimer === -1) this.commit();
    });
  }

  /** Record the graph for undo and autosave it. */
  commit() {
    this.cancelPendingCommit();
    this.undoStack.record(JSON.stringify(this.graph.serialize()));
    this.autosave();
    this.updateUndoButtons();
  }

  autosave() {
    this.store.save(this.name, this.workflowForSaving());
  }

  viewChanged() {
    this.autosave();
  }

  updateUndoButtons() {
    const { states, index } = this.undoStack;
    this.doc.getElementById("undo-button").disabled = index <= 0;
    this.doc.getElementById("redo-button").disabled = index >= states.length - 1;
  }

  undo() {
    if (this.commitTimer) this.commit();
    const state = this.undoStack.undo();
    if (state) this.restoreState(state);
  }

  redo() {
    if (this.commitTimer) this.commit();
    const state = this.undoStack.redo();
    if (state) this.restoreState(state);
  }

  restoreState(state) {
    this.graph.load(JSON.parse(state));
    this.cancelPendingCommit();
    this.autosave();
    this.updateUndoButtons();
  }

  cancelPendingCommit() {
    clearTimeout(this.commitTimer);
    this.commitTimer = 0;
  }

  /** The editor workflow with the current view, as saved to files and sent with prompts. */
  workflowForSaving() {
    const workflow = this.graph.serialize();
    workflow.extra = { ...workflow.extra, ds: this.view.ds };
    return workflow;
  }

  // ---- loading and saving -------------------------------------------------------------------------------

  /** Replace the canvas with an editor workflow; throws (and keeps the old graph) if it cannot be read. */
  loadWorkflow(workflow, name = this.name, { fit = true, undoable = true } = {}) {
    const previous = this.graph.serialize();
    try {
      this.graph.load(workflow);
    } catch (error) {
      this.graph.load(previous);
      throw error;
    }
    this.name = name;
    this.doc.getElementById("workflow-name").value = name;
    this.execution.forgetNodes();
    const ds = workflow.extra?.ds;
    if (ds && !fit) this.view.ds = ds;
    else this.view.fitView();
    if (undoable) this.commit();
    else {
      this.cancelPendingCommit();
      this.undoStack.reset(JSON.stringify(this.graph.serialize()));
      this.autosave();
      this.updateUndoButtons();
    }
    const missing = [...new Set([...this.graph.nodes.values()].map((node) => node.type)
      .filter((type) => !this.defs.has(type) && !this.graph.subgraphName(type)))];
    if (missing.length) {
      this.toast(`Node types not installed on the server: ${missing.join(", ")}. They are kept but cannot run.`,
        { kind: "error", timeout: 10000 });
    }
  }

  loadPrompt(prompt, name) {
    this.loadWorkflow(apiToEditor(prompt, this.defs), name);
  }

  async loadTemplate(name) {
    this.loadPrompt(await this.api.workflowTemplate(name), name);
  }

  newWorkflow() {
    this.loadWorkflow({ nodes: [], links: [], groups: [] }, "Untitled");
  }

  loadDefault() {
    this.loadWorkflow(defaultWorkflow(this.defs), "Untitled");
  }

  saveWorkflow() {
    downloadJson(this.doc, this.workflowForSaving(), `${this.fileStem()}.json`);
  }

  async saveWorkflowOnServer() {
    try {
      const file = await saveToServer(this, this.workflowForSaving());
      if (file) this.toast(`Saved ${file} on the server`, { kind: "success", timeout: 2500 });
    } catch (error) {
      this.toast(`Cannot save on the server: ${error.message}`, { kind: "error" });
    }
  }

  showServerWorkflows() {
    return showServerWorkflows(this, (file, workflow) => this.loadWorkflow(workflow, file.replace(/\.json$/i, "")));
  }

  exportApi() {
    try {
      downloadJson(this.doc, editorToApi(this.workflowForSaving(), this.defs), `${this.fileStem()}_api.json`);
    } catch (error) {
      this.toast(`Cannot export the API format: ${error.message}`, { kind: "error" });
    }
  }

  fileStem() {
    return (this.name || "workflow").replace(/[\\/:*?"<>|]+/g, "_");
  }

  async openFile(file) {
    try {
      const found = await readWorkflowFile(file);
      if (found.workflow) this.loadWorkflow(found.workflow, workflowName(file.name));
      else this.loadPrompt(found.prompt, workflowName(file.name));
      this.toast(`Loaded ${file.name}`, { kind: "success", timeout: 2500 });
    } catch (error) {
      this.toast(`Cannot load ${file.name}: ${error.message}`, { kind: "error" });
    }
  }

  /** Files dropped on the canvas: an image on an upload node is uploaded into it; anything else is opened. */
  dropFiles(files, node) {
    if (!files.length) return;
    const file = files[0];
    if (node && this.defs.get(node.type)?.uploadOption && file.type.startsWith("image/")) {
      this.uploadToNode(node, file);
      return;
    }
    this.openFile(file);
  }

  loadFromHistory(entry) {
    const [, promptId, prompt, extraData] = entry.prompt;
    const workflow = extraData?.extra_pnginfo?.workflow;
    try {
      if (workflow) this.loadWorkflow(workflow, this.name);
      else this.loadPrompt(prompt, this.name);
    } catch (error) {
      this.toast(`Cannot load that prompt's workflow: ${error.message}`, { kind: "error" });
      return;
    }
    for (const [nodeId, output] of Object.entries(entry.outputs ?? {})) {
      if (output.images?.length) this.execution.showNodeImages(nodeId, output.images);
    }
    this.toast(`Loaded the workflow of prompt ${promptId.slice(0, 8)}`, { kind: "success", timeout: 2500 });
  }

  // ---- queueing ---------------------------------------------------------------------------------------

  async queue({ front = false } = {}) {
    if (this.queueing) return;
    this.queueing = true;
    const count = Math.max(1, Math.min(100, Number(this.doc.getElementById("batch-count").value) || 1));
    try {
      for (let i = 0; i < count; i += 1) {
        if (!(await this.queueOnce(front))) break;
      }
    } finally {
      this.queueing = false;
    }
  }

  async queueOnce(front) {
    if (this.commitTimer) this.commit();
    const workflow = this.workflowForSaving();
    let prompt;
    try {
      prompt = editorToApi(workflow, this.defs);
    } catch (error) {
      if (!error.needsServer) {
        this.toast(`The workflow cannot be run: ${error.message}`, { kind: "error" });
        return false;
      }
      prompt = workflow;
    }
    if (Object.keys(prompt).length === 0) {
      this.toast("Nothing to run: the canvas has no nodes that run.", { kind: "error" });
      return false;
    }
    const request = { prompt, workflow };
    await this.extensions.beforeQueue(request);
    // cleared before sending: the run may fail, and mark its node, before the response to the POST arrives
    this.execution.clearErrors();
    try {
      await this.api.queuePrompt({ ...request, clientId: this.clientId, front });
    } catch (error) {
      if (error instanceof ApiError && error.status === 400 && error.body?.error) {
        this.execution.showValidationErrors(error.body);
      } else {
        this.toast(`Could not queue the prompt: ${error.message}`, { kind: "error" });
      }
      return false;
    }
    this.applyControlsAfterGenerate();
    this.queuePanel.scheduleRefresh();
    return true;
  }

  /** Seeds and other controlled widgets move on after each queue: increment, decrement or randomize. */
  applyControlsAfterGenerate() {
    for (const node of this.graph.nodes.values()) {
      for (const control of (node.widgets ?? []).filter((widget) => widget.kind === "control")) {
        const target = node.widgets.find((widget) => widget.kind === "widget" && widget.name === control.of);
        const linked = node.widgetInput(control.of)?.slot.link;
        if (!target || (linked !== null && linked !== undefined)) continue;
        const spec = this.view.viewOf(node)?.specFor(target);
        const next = valueAfterGenerate(spec, target.value, control.value);
        if (next !== target.value) this.graph.setWidgetValue(node, target.name, next);
      }
    }
  }

  async interrupt() {
    try {
      await this.api.interrupt();
    } catch (error) {
      this.toast(`Could not interrupt: ${error.message}`, { kind: "error" });
    }
  }

  // ---- node views ---------------------------------------------------------------------------------------

  /** Called by the canvas for each node it draws: put back images and errors, let extensions decorate it. */
  nodeViewCreated(view) {
    this.execution.decorate(view);
    this.extensions.nodeCreated(view);
  }

  customWidget(nodeType, inputName, spec) {
    return this.extensions.widgetFor(nodeType, inputName, spec);
  }

  editWidget(node, widget, value) {
    if (widget.kind === "control") this.graph.setWidgetValue(node, widget.of, value, "control");
    else this.graph.setWidgetValue(node, widget.name, value);
  }

  nodeTitle(node) {
    if (node.title) return node.title;
    return this.defs.get(node.type)?.displayName ?? this.graph.subgraphName(node.type) ?? node.type;
  }

  toggleCollapsed(node) {
    node.flags = { ...node.flags, collapsed: !node.flags.collapsed };
    if (!node.flags.collapsed) delete node.flags.collapsed;
    this.graph.changed("node", { node });
  }

  async renameNode(node) {
    const title = await askText(this.doc, "Node title", this.nodeTitle(node));
    if (title === null) return;
    const trimmed = title.trim();
    this.graph.setTitle(node, trimmed === this.defs.get(node.type)?.displayName ? "" : trimmed);
  }

  async renameGroup(group) {
    const title = await askText(this.doc, "Group title", group.title ?? "Group");
    if (title !== null) {
      group.title = title;
      this.graph.changed("group");
    }
  }

  inputImageUrl(name) {
    return this.api.viewUrl(inputFileRef(name));
  }

  /** Upload an image file into an upload node's image widget (the server's list learns the new name). */
  async uploadToNode(node, file) {
    const upload = this.defs.get(node.type)?.uploadOption;
    if (!upload) return;
    try {
      const saved = await this.api.uploadImage(file);
      this.setUploadedImage(node, upload.input, saved);
      this.toast(`Uploaded ${saved.name}`, { kind: "success", timeout: 2500 });
    } catch (error) {
      this.toast(`Upload failed: ${error.message}`, { kind: "error" });
    }
  }

  setUploadedImage(node, inputName, saved) {
    const name = saved.subfolder ? `${saved.subfolder}/${saved.name}` : saved.name;
    for (const def of this.defs.all()) {
      for (const spec of def.inputs) {
        if (spec.type === "COMBO" && spec.options.image_upload && !spec.choices.includes(name)) spec.choices.push(name);
      }
    }
    this.view.viewOf(node)?.controls.forEach((control) => control.refreshChoices?.());
    this.graph.setWidgetValue(node, inputName, name);
  }

  async editMask(node) {
    const upload = this.defs.get(node.type)?.uploadOption;
    const name = upload && node.widget(upload.input)?.value;
    if (!name) {
      this.toast("Choose or upload an image first.", { kind: "error" });
      return;
    }
    const original = inputFileRef(name);
    await this.maskEditor.open({
      imageUrl: this.inputImageUrl(name),
      title: `Mask for ${name}`,
      save: async (blob) => {
        const saved = await this.api.uploadMask(blob, original);
        this.setUploadedImage(node, upload.input, saved);
        const name = saved.subfolder ? `${saved.subfolder}/${saved.name}` : saved.name;
        this.toast(`Saved the mask as ${name}`, { kind: "success", timeout: 3000 });
      },
    });
  }

  openImages(images, index) {
    const shown = images.filter(Boolean);
    if (shown.length) lightbox(this.doc, shown, Math.min(index, shown.length - 1));
  }

  // ---- adding nodes -------------------------------------------------------------------------------------

  /** Open the palette; the chosen node is added at `at` (world) and handed to `onCreate`. */
  async openPalette({ at = null, client = null, wire = null, onCreate = null } = {}) {
    const type = await this.palette.open({ client, wire });
    if (!type) return null;
    const pos = at ?? this.view.visibleCenter();
    const node = this.addNode(type, [pos[0], pos[1] + TITLE_HEIGHT]);
    onCreate?.(node);
    return node;
  }

  addNode(type, pos) {
    const node = this.graph.addNode(this.graph.createNode(type, pos.map(Math.round)));
    this.view.setSelection([node.id]);
    return node;
  }

  // ---- selection commands -------------------------------------------------------------------------------

  deleteSelected() {
    for (const node of this.view.selectedNodes()) this.graph.removeNode(node.id);
  }

  copySelected() {
    const nodes = this.view.selectedNodes();
    if (!nodes.length) return;
    this.storage.setItem(CLIPBOARD_KEY, JSON.stringify(this.graph.copy(nodes.map((node) => node.id))));
  }

  paste({ keepInputLinks = false, at = null } = {}) {
    let clip;
    try {
      clip = JSON.parse(this.storage.getItem(CLIPBOARD_KEY) ?? "null");
    } catch {
      clip = null;
    }
    if (!clip?.nodes?.length) return;
    const corner = at ?? this.view.toWorld(...this.view.lastPointer);
    const topLeft = [Math.round(corner[0]), Math.round(corner[1] + TITLE_HEIGHT)];
    const added = this.graph.paste(clip, topLeft, { keepInputLinks });
    this.view.setSelection(added.map((node) => node.id));
  }

  cloneNode(node) {
    const clip = this.graph.copy([node.id]);
    const added = this.graph.paste(clip, [node.pos[0] + 30, node.pos[1] + 30]);
    this.view.setSelection(added.map((item) => item.id));
  }

  toggleMode(mode) {
    const nodes = this.view.selectedNodes();
    const allSet = nodes.length > 0 && nodes.every((node) => node.mode === mode);
    for (const node of nodes) this.graph.setMode(node, allSet ? MODE_ALWAYS : mode);
  }

  groupSelected(at = null) {
    const views = this.view.selectedNodes().map((node) => this.view.viewOf(node));
    let bounding;
    if (views.length) {
      const bounds = views.map((view) => this.view.nodeBounds(view));
      const left = Math.min(...bounds.map((b) => b[0])) - 20;
      const top = Math.min(...bounds.map((b) => b[1])) - 60;
      const right = Math.max(...bounds.map((b) => b[0] + b[2])) + 20;
      const bottom = Math.max(...bounds.map((b) => b[1] + b[3])) + 20;
      bounding = [left, top, right - left, bottom - top];
    } else {
      const pos = at ?? this.view.visibleCenter();
      bounding = [pos[0], pos[1], 400, 300];
    }
    this.graph.addGroup({ title: "Group", bounding: bounding.map(Math.round) });
  }

  // ---- menus --------------------------------------------------------------------------------------------

  nodeMenu(node, clientX, clientY) {
    contextMenu(this.doc, nodeMenuItems(this, node), clientX, clientY);
  }

  canvasMenu(at, clientX, clientY) {
    contextMenu(this.doc, canvasMenuItems(this, at, [clientX, clientY]), clientX, clientY);
  }

  groupMenu(group, clientX, clientY) {
    contextMenu(this.doc, groupMenuItems(this, group), clientX, clientY);
  }

  linkMenu(linkId, clientX, clientY) {
    contextMenu(this.doc, linkMenuItems(this, linkId), clientX, clientY);
  }

  workflowMenu(button) {
    const rect = button.getBoundingClientRect();
    contextMenu(this.doc, workflowMenuItems(this), rect.left, rect.bottom + 4);
  }

  async runMenuItem(item, node) {
    try {
      await item.action(node);
    } catch (error) {
      this.reportExtensionError(item.source, item.label, error);
    }
  }

  chooseFile() {
    this.doc.getElementById("file-input").click();
  }

  // ---- toolbar, keys, help --------------------------------------------------------------------------------

  bindToolbar() {
    const doc = this.doc;
    const click = (id, action) => doc.getElementById(id).addEventListener("click", action);
    click("workflow-menu-button", (event) => this.workflowMenu(event.currentTarget));
    click("add-node-button", () => this.openPalette());
    click("undo-button", () => this.undo());
    click("redo-button", () => this.redo());
    click("queue-button", () => this.queue());
    click("interrupt-button", () => this.interrupt());
    click("queue-panel-button", () => this.queuePanel.toggle());
    click("refresh-button", () => this.refreshDefinitions());
    click("help-button", () => showHelp(this.doc));
    const name = doc.getElementById("workflow-name");
    name.addEventListener("change", () => {
      this.name = name.value.trim() || "Untitled";
      this.autosave();
    });
    const fileInput = doc.getElementById("file-input");
    fileInput.addEventListener("change", () => {
      if (fileInput.files[0]) this.openFile(fileInput.files[0]);
      fileInput.value = "";
    });
    this.win.addEventListener("pagehide", () => this.autosave());
  }

  panelToggled(open) {
    this.doc.getElementById("queue-panel-button").classList.toggle("active", open);
  }

  bindKeys() {
    this.doc.addEventListener("keydown", (event) => {
      if (this.doc.querySelector("dialog[open], .palette, .lightbox")) return;
      const command = commandFor(event, isTyping(event.target));
      if (!command) return;
      event.preventDefault();
      this.run(command);
    });
  }

  run(command) {
    const commands = {
      queue: () => this.queue(),
      queueFront: () => this.queue({ front: true }),
      undo: () => this.undo(),
      redo: () => this.redo(),
      copy: () => this.copySelected(),
      paste: () => this.paste(),
      pasteWithInputs: () => this.paste({ keepInputLinks: true }),
      selectAll: () => this.view.setSelection([...this.graph.nodes.keys()]),
      deleteSelected: () => this.deleteSelected(),
      toggleMute: () => this.toggleMode(MODE_MUTED),
      toggleBypass: () => this.toggleMode(MODE_BYPASSED),
      groupSelected: () => this.groupSelected(),
      save: () => this.saveWorkflow(),
      open: () => this.chooseFile(),
      fitView: () => this.view.fitView(this.view.selection.size > 0),
      refresh: () => this.refreshDefinitions(),
      toggleQueuePanel: () => this.queuePanel.toggle(),
      help: () => showHelp(this.doc),
      escape: () => this.view.setSelection([]),
    };
    commands[command]?.();
  }

  /** Reload /object_info (new models, new input images) and redraw the nodes with the new lists. */
  async refreshDefinitions() {
    try {
      await this.loadDefinitions();
      this.view.rebuild();
      this.toast("Node definitions and model lists refreshed", { kind: "success", timeout: 2000 });
    } catch (error) {
      this.toast(`Refresh failed: ${error.message}`, { kind: "error" });
    }
  }

  /** The notices above the canvas: demo models selected, no checkpoints at all. */
  updateBanners() {
    const banner = this.doc.getElementById("demo-banner");
    const demo = this.demoModelsInUse();
    const checkpoints = this.defs.get("CheckpointLoaderSimple")?.input("ckpt_name")?.choices;
    if (demo.length) {
      banner.textContent = `Demo model selected (${demo.join(", ")}): it has random weights, so every image is noise. `
        + "Put a real Stable Diffusion checkpoint in models/checkpoints and press Refresh.";
    } else if (checkpoints?.length === 0) {
      banner.textContent = "No checkpoints found in models/checkpoints. Put a Stable Diffusion .safetensors file there "
        + "(or run `python main.py make-demo-models` for a small random demo model) and press Refresh.";
    }
    banner.hidden = !demo.length && checkpoints?.length !== 0;
  }

  /** The demo model names chosen in lists of nodes that run. */
  demoModelsInUse() {
    const names = new Set();
    for (const node of this.graph.nodes.values()) {
      if (node.mode !== MODE_ALWAYS) continue;
      for (const widget of node.widgets ?? []) {
        const spec = widget.kind === "widget" ? this.defs.get(node.type)?.input(widget.name) : null;
        if (spec?.type === "COMBO" && isDemoModel(widget.value)) names.add(widget.value);
      }
    }
    return [...names];
  }

  toast(message, options) {
    return toast(this.doc, message, options);
  }
}

/** A Load Image value ("sub/name.png") as the file reference /view and /upload/mask take. */
function inputFileRef(name) {
  const slash = name.lastIndexOf("/");
  return { filename: name.slice(slash + 1), subfolder: slash < 0 ? "" : name.slice(0, slash), type: "input" };
}
