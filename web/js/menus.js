/**
 * The editor's menus: what the node, canvas, group, wire and workflow menus offer, as lists of
 * {label, action} for `contextMenu`. Each entry calls an App command; nothing else lives here.
 */
import { MODE_ALWAYS, MODE_BYPASSED, MODE_MUTED } from "./graph.js";

export function nodeMenuItems(app, node) {
  const view = app.view.viewOf(node);
  const modes = [[MODE_ALWAYS, "Mode: always"], [MODE_MUTED, "Mode: mute (Ctrl+M)"],
    [MODE_BYPASSED, "Mode: bypass (Ctrl+B)"]];
  const items = [
    { label: "Rename…", action: () => app.renameNode(node) },
    { label: node.flags.collapsed ? "Expand" : "Collapse", action: () => app.toggleCollapsed(node) },
    { separator: true },
    ...modes.map(([mode, label]) => ({
      label, checked: node.mode === mode, action: () => app.graph.setMode(node, mode),
    })),
    { separator: true },
    { label: "Clone", action: () => app.cloneNode(node) },
    { label: "Copy", action: () => app.copySelected() },
  ];
  if (app.defs.get(node.type)?.uploadOption) items.push({ label: "Edit mask…", action: () => app.editMask(node) });
  if (view?.images.length) items.push({ label: "Open image", action: () => app.openImages(view.images, 0) });
  const extra = app.extensions.nodeMenuItems(node);
  if (extra.length) {
    const entries = extra.map((item) => ({ label: item.label, action: () => app.runMenuItem(item, node) }));
    items.push({ separator: true }, ...entries);
  }
  items.push({ separator: true }, { label: "Remove", action: () => app.deleteSelected() });
  return items;
}

export function canvasMenuItems(app, at, client) {
  return [
    { label: "Add node…", action: () => app.openPalette({ at, client }) },
    { label: "Add group", action: () => app.groupSelected(at) },
    { label: "Paste", action: () => app.paste({ at }) },
    { separator: true },
    { label: "Select all", action: () => app.view.setSelection([...app.graph.nodes.keys()]) },
    { label: "Fit view", action: () => app.view.fitView() },
  ];
}

export function groupMenuItems(app, group) {
  return [
    { label: "Edit title…", action: () => app.renameGroup(group) },
    {
      label: "Select its nodes",
      action: () => app.view.setSelection(app.view.nodesInGroup(group).map((node) => node.id)),
    },
    { label: "Remove group", action: () => app.graph.removeGroup(group) },
  ];
}

export function linkMenuItems(app, linkId) {
  return [{ label: "Delete wire", action: () => app.graph.removeLink(linkId) }];
}

export function workflowMenuItems(app) {
  return [
    { label: "New (empty canvas)", action: () => app.newWorkflow() },
    { label: "Load the default workflow", action: () => app.loadDefault() },
    { label: "Open… (Ctrl+O)", action: () => app.chooseFile() },
    { separator: true },
    { label: "Save (Ctrl+S)", action: () => app.saveWorkflow() },
    { label: "Save on the server…", action: () => app.saveWorkflowOnServer() },
    { label: "Workflows on the server…", action: () => app.showServerWorkflows() },
    { label: "Export API format", action: () => app.exportApi() },
    ...templateMenuItems(app),
  ];
}

/** The shipped workflows (txt2img, inpainting, SDXL, FLUX, ...), each loaded as a new graph. */
function templateMenuItems(app) {
  if (!app.templates.length) return [];
  return [
    { separator: true },
    ...app.templates.map((name) => ({ label: `Template: ${name}`, action: () => app.loadTemplate(name) })),
  ];
}
