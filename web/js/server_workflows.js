/**
 * Workflows kept on the server, in the user's `workflows/` folder (the same files ComfyUI's frontend lists in its
 * Workflows panel): a dialog listing them with Open, Rename and Delete, and saving the current workflow there.
 * Every failure is shown; nothing is overwritten without asking. Knows the DOM through the document passed in.
 */
import { ApiError } from "./api.js";
import { askText, element } from "./dialogs.js";

/** A file name for a workflow name: its name with `.json` (a name that already ends so is kept). */
export function workflowFile(name) {
  const trimmed = name.trim();
  return trimmed.toLowerCase().endsWith(".json") ? trimmed : `${trimmed}.json`;
}

/**
 * Save `workflow` as `workflows/<name>.json`; asks before replacing an existing one. Resolves to the file
 * name saved, or null when the user cancelled.
 */
export async function saveToServer(app, workflow) {
  const name = await askText(app.doc, "Save the workflow on the server as", app.name || "workflow");
  if (!name || !name.trim()) return null;
  const file = workflowFile(name);
  try {
    await app.api.saveServerWorkflow(file, workflow, false);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 409)) throw error;
    if (!app.doc.defaultView.confirm(`${file} exists on the server. Replace it?`)) return null;
    await app.api.saveServerWorkflow(file, workflow, true);
  }
  return file;
}

/** The dialog of the workflows saved on the server; `open(file, workflow)` loads one. */
export async function showServerWorkflows(app, open) {
  const doc = app.doc;
  const dialog = element(doc, "dialog", "server-workflows");
  dialog.setAttribute("aria-label", "Workflows on the server");
  const title = element(doc, "h2", "", "Workflows on the server");
  const list = element(doc, "ul", "server-workflow-list");
  const close = element(doc, "button", "", "Close");
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  dialog.append(title, list, close);
  doc.body.append(dialog);

  const act = async (work) => {
    try {
      await work();
      await refresh();
    } catch (error) {
      app.toast(`Server workflows: ${error.message}`, { kind: "error" });
    }
  };

  const row = (file) => {
    const item = element(doc, "li", "server-workflow");
    item.dataset.file = file.path;
    const label = element(doc, "span", "server-workflow-name", file.path.replace(/\.json$/i, ""));
    const openButton = element(doc, "button", "primary", "Open");
    openButton.addEventListener("click", () => act(async () => {
      open(file.path, await app.api.readServerWorkflow(file.path));
      dialog.close();
    }));
    const rename = element(doc, "button", "", "Rename");
    rename.addEventListener("click", () => act(async () => {
      const name = await askText(doc, `Rename ${file.path} to`, file.path.replace(/\.json$/i, ""));
      if (name && name.trim()) await app.api.moveServerWorkflow(file.path, workflowFile(name));
    }));
    const remove = element(doc, "button", "danger", "Delete");
    remove.addEventListener("click", () => act(async () => {
      if (doc.defaultView.confirm(`Delete ${file.path} from the server?`)) {
        await app.api.deleteServerWorkflow(file.path);
      }
    }));
    item.append(label, openButton, rename, remove);
    return item;
  };

  async function refresh() {
    const files = await app.api.listServerWorkflows();
    list.replaceChildren(...(files.length ? files.map(row) : [element(doc, "li", "empty", "No saved workflows yet.")]));
  }

  dialog.showModal();
  await act(async () => {});
  return dialog;
}
