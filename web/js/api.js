/**
 * The HTTP client for the server's ComfyUI-compatible API: prompts, queue, history, files, catalogue.
 *
 * Every method returns plain data or throws `ApiError` carrying the server's JSON error body. With an auth
 * token (from the page's `?token=`), requests also carry it as a Bearer header. Knows nothing of the DOM.
 */

/** The module of the server's own shipped workflows in its templates map (server/catalog_routes.py). */
const SHIPPED_TEMPLATES = "nodeflow";

/** A file under the user's workflows/ folder as ComfyUI's frontend names it in URLs ("/" as %2F). */
function serverWorkflowPath(file) {
  return encodeURIComponent(`workflows/${file}`);
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? body?.error ?? `the server answered ${status}`);
    this.status = status;
    this.body = body;
  }
}

export class ApiClient {
  constructor({ base = "", token = null, fetchImpl = globalThis.fetch.bind(globalThis) } = {}) {
    this.base = base;
    this.token = token;
    this.fetch = fetchImpl;
  }

  async request(path, { method = "GET", json, body, headers = {} } = {}) {
    const allHeaders = { ...headers };
    if (this.token) allHeaders.Authorization = `Bearer ${this.token}`;
    let payload = body;
    if (json !== undefined) {
      allHeaders["Content-Type"] = "application/json";
      payload = JSON.stringify(json);
    }
    const response = await this.fetch(this.base + path,
      { method, headers: allHeaders, body: payload, credentials: "same-origin" });
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { error: { message: text } };
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  objectInfo() {
    return this.request("/object_info");
  }

  /** POST /prompt; a 400 with validation errors throws ApiError whose body has {error, node_errors}. */
  queuePrompt({ prompt, workflow, clientId, front = false }) {
    const json = { prompt, client_id: clientId, extra_data: { extra_pnginfo: { workflow } } };
    if (front) json.front = true;
    return this.request("/prompt", { method: "POST", json });
  }

  getQueue() {
    return this.request("/queue");
  }

  deleteFromQueue(promptIds) {
    return this.request("/queue", { method: "POST", json: { delete: promptIds } });
  }

  clearQueue() {
    return this.request("/queue", { method: "POST", json: { clear: true } });
  }

  getHistory(maxItems = 64) {
    return this.request(`/history?max_items=${maxItems}`);
  }

  deleteHistory(promptIds) {
    return this.request("/history", { method: "POST", json: { delete: promptIds } });
  }

  clearHistory() {
    return this.request("/history", { method: "POST", json: { clear: true } });
  }

  interrupt(promptId = null) {
    return this.request("/interrupt", { method: "POST", json: promptId ? { prompt_id: promptId } : {} });
  }

  /** Upload an image into the input folder; resolves to {name, subfolder, type}. */
  uploadImage(file, { subfolder = "", type = "input", overwrite = false, filename = file.name } = {}) {
    const form = new FormData();
    form.append("image", file, filename);
    form.append("type", type);
    if (subfolder) form.append("subfolder", subfolder);
    if (overwrite) form.append("overwrite", "true");
    return this.request("/upload/image", { method: "POST", body: form });
  }

  /** Upload a painted mask; the server stores the original's RGB with the mask's alpha. */
  uploadMask(maskBlob, originalRef, { filename = `clipspace-mask-${Date.now()}.png`, subfolder = "clipspace" } = {}) {
    const form = new FormData();
    form.append("image", maskBlob, filename);
    form.append("original_ref", JSON.stringify(originalRef));
    form.append("type", "input");
    form.append("subfolder", subfolder);
    return this.request("/upload/mask", { method: "POST", body: form });
  }

  /** The URL of a file in the output, input or temp folder. */
  viewUrl({ filename, subfolder = "", type = "output" }, extra = {}) {
    const query = new URLSearchParams({ filename, subfolder, type, ...extra });
    if (this.token) query.set("token", this.token);
    return `${this.base}/view?${query}`;
  }

  /**
   * Names of the workflows the server ships (API format): the "nodeflow" module of ComfyUI's {module: [names]}
   * templates map; none when the server has no such route.
   */
  async workflowTemplates() {
    try {
      const modules = await this.request("/workflow_templates");
      const names = modules?.[SHIPPED_TEMPLATES];
      return Array.isArray(names) ? names.filter((name) => typeof name === "string") : [];
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return [];
      throw error;
    }
  }

  /** One shipped workflow, in API format. */
  workflowTemplate(name) {
    return this.request(`/workflow_templates/${SHIPPED_TEMPLATES}/${encodeURIComponent(name)}.json`);
  }

  /** The node packs that failed to load: [{name, missing, error}]; none when the server has no such route. */
  async failedPlugins() {
    try {
      const records = await this.request("/custom_nodes");
      return Array.isArray(records) ? records.filter((record) => record?.status === "failed") : [];
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return [];
      throw error;
    }
  }

  /** Module URLs of the installed plugins' web extensions; none when the server has no such route. */
  async extensions() {
    try {
      const urls = await this.request("/extensions");
      return Array.isArray(urls) ? urls.filter((url) => typeof url === "string") : [];
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return [];
      throw error;
    }
  }

  // ---- workflows kept on the server: the user's workflows/ folder (ComfyUI's /userdata routes) ----------

  /** The saved workflows: [{path, size, modified}], paths relative to workflows/; none before the first. */
  async listServerWorkflows() {
    try {
      const files = await this.request("/userdata?dir=workflows&recurse=true&full_info=true&split=false");
      return Array.isArray(files) ? files.filter((file) => /\.json$/i.test(file.path)) : [];
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return [];
      throw error;
    }
  }

  readServerWorkflow(file) {
    return this.request(`/userdata/${serverWorkflowPath(file)}`);
  }

  /** Save a workflow; with `overwrite` false an existing file is an ApiError with status 409. */
  saveServerWorkflow(file, workflow, overwrite) {
    return this.request(`/userdata/${serverWorkflowPath(file)}?overwrite=${overwrite}&full_info=true`,
      { method: "POST", body: JSON.stringify(workflow), headers: { "Content-Type": "application/json" } });
  }

  moveServerWorkflow(from, to) {
    return this.request(`/userdata/${serverWorkflowPath(from)}/move/${serverWorkflowPath(to)}`, { method: "POST" });
  }

  deleteServerWorkflow(file) {
    return this.request(`/userdata/${serverWorkflowPath(file)}`, { method: "DELETE" });
  }
}
