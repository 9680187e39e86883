/**
 * Keeping workflows: autosave in the browser's storage (so a reload loses nothing), saving to a file, and
 * reading a dropped or picked file (an editor workflow, an API prompt, or a PNG with an embedded workflow).
 * Knows nothing of the canvas; storage and document are passed in.
 */
import { workflowFromPng } from "./png.js";
import { isApiFormat } from "./workflow_api.js";

export class WorkflowStore {
  constructor(storage, key = "nodeflow.workflow") {
    this.storage = storage;
    this.key = key;
  }

  save(name, workflow) {
    try {
      this.storage.setItem(this.key, JSON.stringify({ name, workflow }));
      return true;
    } catch (error) {
      console.warn("could not autosave the workflow", error);
      return false;
    }
  }

  /** The autosaved {name, workflow}, or null when there is none or it is unreadable. */
  load() {
    try {
      const saved = JSON.parse(this.storage.getItem(this.key) ?? "null");
      return saved && Array.isArray(saved.workflow?.nodes) ? saved : null;
    } catch {
      return null;
    }
  }
}

/** Offer `data` as a JSON file download. */
export function downloadJson(doc, data, filename) {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = doc.createElement("a");
  link.href = url;
  link.download = filename;
  doc.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** A file name without its extension, for the workflow's name. */
export function workflowName(filename) {
  return filename.replace(/\.(json|png)$/i, "") || "workflow";
}

/**
 * What a file holds: {workflow} (editor format) or {prompt} (API format). Throws an Error whose message says
 * why the file cannot be loaded.
 */
export async function readWorkflowFile(file) {
  const isPng = file.type === "image/png" || /\.png$/i.test(file.name);
  if (isPng) {
    const found = await workflowFromPng(await file.arrayBuffer());
    if (!found.workflow && !found.prompt) throw new Error(`${file.name} has no workflow in it`);
    return found;
  }
  let data;
  try {
    data = JSON.parse(await file.text());
  } catch (error) {
    throw new Error(`${file.name} is not valid JSON (${error.message})`);
  }
  if (data && Array.isArray(data.nodes)) return { workflow: data };
  if (isApiFormat(data)) return { prompt: data };
  throw new Error(`${file.name} is neither an editor workflow nor an API-format prompt`);
}
