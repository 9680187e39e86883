/**
 * The keyboard shortcuts: one table that both the key handler and the help panel read, so the help never
 * disagrees with the keys. `Mod` is Ctrl (or Cmd on a Mac). Pure.
 */

export const SHORTCUTS = [
  { keys: "Mod+Enter", command: "queue", help: "Queue the workflow (batch count times)", whileTyping: true },
  { keys: "Mod+Shift+Enter", command: "queueFront", help: "Queue at the front of the queue", whileTyping: true },
  { keys: "Mod+Z", command: "undo", help: "Undo" },
  { keys: "Mod+Y", command: "redo", help: "Redo" },
  { keys: "Mod+Shift+Z", command: "redo", help: "Redo" },
  { keys: "Mod+C", command: "copy", help: "Copy the selected nodes" },
  { keys: "Mod+V", command: "paste", help: "Paste at the pointer" },
  { keys: "Mod+Shift+V", command: "pasteWithInputs", help: "Paste, keeping wires into the pasted nodes" },
  { keys: "Mod+A", command: "selectAll", help: "Select every node" },
  { keys: "Delete", command: "deleteSelected", help: "Delete the selected nodes" },
  { keys: "Backspace", command: "deleteSelected", help: "Delete the selected nodes" },
  { keys: "Mod+M", command: "toggleMute", help: "Mute or unmute the selected nodes" },
  { keys: "Mod+B", command: "toggleBypass", help: "Bypass or enable the selected nodes" },
  { keys: "Mod+G", command: "groupSelected", help: "Put the selected nodes in a group" },
  { keys: "Mod+S", command: "save", help: "Save the workflow as a JSON file", whileTyping: true },
  { keys: "Mod+O", command: "open", help: "Open a workflow file (JSON or PNG)", whileTyping: true },
  { keys: ".", command: "fitView", help: "Fit the view to the nodes (or to the selection)" },
  { keys: "R", command: "refresh", help: "Reload node definitions and model lists" },
  { keys: "Q", command: "toggleQueuePanel", help: "Show or hide the queue panel" },
  { keys: "?", command: "help", help: "Show this help" },
  { keys: "Escape", command: "escape", help: "Close dialogs, clear the selection" },
];

export const GESTURES = [
  ["Drag the background, or Space+drag, or middle-drag", "Pan"],
  ["Wheel (or pinch)", "Zoom at the pointer"],
  ["Click a node, Shift/Ctrl+click", "Select, add to the selection"],
  ["Ctrl/Shift+drag the background", "Select with a box"],
  ["Drag from an output to an input", "Connect (a wire of the wrong type is refused)"],
  ["Drag a wire onto empty canvas", "Add a node that takes it"],
  ["Drag from a connected input", "Pick its wire up again"],
  ["Double-click the canvas", "Add a node"],
  ["Double-click a node's title", "Rename it"],
  ["Right-click a node, a group, a wire or the canvas", "More actions"],
  ["Drop a .json or a PNG made here or in ComfyUI", "Load its workflow"],
  ["Drop an image on a Load Image node", "Upload it into that node"],
];

/** The command for a keydown event, or null. */
export function commandFor(event, typing) {
  const mod = event.ctrlKey || event.metaKey;
  for (const shortcut of SHORTCUTS) {
    if (typing && !shortcut.whileTyping) continue;
    if (matches(shortcut.keys, event, mod)) return shortcut.command;
  }
  return null;
}

function matches(keys, event, mod) {
  const parts = keys.split("+");
  const key = parts.pop();
  const wantsMod = parts.includes("Mod");
  const wantsShift = parts.includes("Shift");
  if (wantsMod !== mod || event.altKey) return false;
  if (key.length === 1 && !/[a-z]/i.test(key)) return event.key === key;
  if (wantsShift !== event.shiftKey) return false;
  return event.key.toLowerCase() === key.toLowerCase();
}
