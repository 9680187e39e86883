/**
 * The help panel: every keyboard shortcut and mouse gesture, read from the same table the key handler uses.
 */
import { element } from "./dialogs.js";
import { GESTURES, SHORTCUTS } from "./shortcuts.js";

export function showHelp(doc) {
  const dialog = element(doc, "dialog", "help-dialog");
  dialog.setAttribute("aria-label", "Keyboard and mouse");
  dialog.append(element(doc, "h2", "", "Keyboard and mouse"));
  const keysByHelp = new Map();
  for (const shortcut of SHORTCUTS) {
    const keys = keysByHelp.get(shortcut.help) ?? [];
    keys.push(shortcut.keys.replace("Mod", "Ctrl"));
    keysByHelp.set(shortcut.help, keys);
  }
  const table = element(doc, "table", "shortcut-table");
  const rows = [...[...keysByHelp].map(([help, keys]) => [keys.join(" / "), help]), ...GESTURES];
  for (const [keys, meaning] of rows) {
    const row = element(doc, "tr");
    row.append(element(doc, "td", "keys", keys), element(doc, "td", "", meaning));
    table.append(row);
  }
  const close = element(doc, "button", "primary", "Close");
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  dialog.append(table, close);
  doc.body.append(dialog);
  dialog.showModal();
}
