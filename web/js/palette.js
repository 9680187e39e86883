/**
 * The node palette: a searchable list of every node class, grouped by category, with each one's description,
 * opened by double-clicking the canvas, the "Add node" button, or dropping a wire on empty canvas (then only
 * nodes that can take the wire are listed). `searchNodes` is the pure ranking; `NodePalette` the dialog.
 */
import { element } from "./dialogs.js";
import { typesCompatible } from "./node_defs.js";

/**
 * Node definitions matching `query` (every word must appear in the name, display name, category or
 * description), best first; with `wire` ({side, type, widget}) only those with a slot that can take the wire.
 */
export function searchNodes(defs, query, wire = null) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const results = [];
  for (const def of defs) {
    if (def.deprecated && !words.length) continue;
    const wireScore = wire ? wireFit(def, wire) : 0;
    if (wireScore < 0) continue;
    const display = def.displayName.toLowerCase();
    const name = def.name.toLowerCase();
    const haystack = `${display} ${name} ${def.category.toLowerCase()} ${def.description.toLowerCase()}`;
    if (!words.every((word) => haystack.includes(word))) continue;
    let score = wireScore;
    const phrase = words.join(" ");
    if (phrase) {
      if (display === phrase || name === phrase) score += 100;
      else if (display.startsWith(phrase) || name.startsWith(phrase)) score += 50;
      else if (words.every((word) => display.includes(word) || name.includes(word))) score += 20;
    }
    if (def.deprecated) score -= 30;
    results.push({ def, score });
  }
  results.sort((a, b) => b.score - a.score || a.def.category.localeCompare(b.def.category)
    || a.def.displayName.localeCompare(b.def.displayName));
  return results.map((result) => result.def);
}

/** How well a node takes a dragged wire: -1 not at all, more for an exact type than for a wildcard. */
function wireFit(def, wire) {
  if (wire.side === "output") {
    const inputs = def.linkableSpecs;
    if (inputs.some((spec) => spec.type === wire.type && !spec.isWidget)) return 10;
    if (inputs.some((spec) => !spec.isWidget && typesCompatible(wire.type, spec.type))) return 5;
    if (inputs.some((spec) => spec.isWidget && typesCompatible(wire.type, spec.type) && wire.type !== "*")) return 2;
    return def.name === "Reroute" ? 1 : -1;
  }
  if (def.name === "PrimitiveNode") return wire.widget ? 1 : -1;
  if (def.outputs.some((output) => output.type === wire.type)) return 10;
  if (def.outputs.some((output) => typesCompatible(output.type, wire.type))) return 5;
  return -1;
}

export class NodePalette {
  constructor(doc, getDefs) {
    this.doc = doc;
    this.getDefs = getDefs;
    this.el = null;
  }

  get isOpen() {
    return Boolean(this.el);
  }

  /** Show the palette; resolves to the chosen node type, or null when closed without a choice. */
  open({ client = null, wire = null, query = "" } = {}) {
    this.close();
    const doc = this.doc;
    return new Promise((resolve) => {
      this.resolve = resolve;
      const panel = element(doc, "div", "palette");
      panel.setAttribute("role", "dialog");
      panel.setAttribute("aria-label", "Add a node");
      const search = element(doc, "input", "palette-search");
      search.type = "search";
      search.placeholder = "Search nodes…";
      search.setAttribute("aria-label", "Search nodes");
      search.value = query;
      const filter = element(doc, "div", "palette-filter");
      filter.hidden = !wire;
      if (wire) filter.textContent = `Nodes that ${wire.side === "output" ? "take" : "give"} ${wire.type}`;
      const list = element(doc, "div", "palette-list");
      list.setAttribute("role", "listbox");
      const description = element(doc, "div", "palette-description");
      panel.append(search, filter, list, description);
      const backdrop = element(doc, "div", "palette-backdrop");
      backdrop.addEventListener("pointerdown", () => this.close());
      doc.body.append(backdrop, panel);
      this.el = panel;
      this.backdrop = backdrop;
      this.place(panel, client);

      let items = [];
      let active = 0;
      const highlight = (index) => {
        if (!items.length) {
          description.textContent = "No node matches.";
          return;
        }
        active = (index + items.length) % items.length;
        items.forEach((item, i) => item.el.classList.toggle("active", i === active));
        items[active].el.scrollIntoView({ block: "nearest" });
        this.describe(description, items[active].def);
      };
      const render = () => {
        const defs = searchNodes(this.getDefs().all(), search.value, wire);
        list.replaceChildren();
        items = [];
        const grouped = !search.value.trim() && !wire;
        let lastCategory = null;
        const ordered = grouped ? [...defs].sort((a, b) => a.category.localeCompare(b.category)
          || a.displayName.localeCompare(b.displayName)) : defs;
        for (const def of ordered) {
          if (grouped && def.category !== lastCategory) {
            list.append(element(doc, "div", "palette-category", def.category || "uncategorised"));
            lastCategory = def.category;
          }
          const item = element(doc, "div", "palette-item");
          item.setAttribute("role", "option");
          item.dataset.type = def.name;
          item.append(element(doc, "span", "palette-name", def.displayName));
          if (!grouped) item.append(element(doc, "span", "palette-item-category", def.category));
          const index = items.length;
          item.addEventListener("pointerenter", () => highlight(index));
          item.addEventListener("click", () => this.choose(def.name));
          list.append(item);
          items.push({ el: item, def });
        }
        highlight(0);
      };
      search.addEventListener("input", render);
      search.addEventListener("keydown", (event) => {
        if (event.key === "ArrowDown") highlight(active + 1);
        else if (event.key === "ArrowUp") highlight(active - 1);
        else if (event.key === "Enter" && items.length) this.choose(items[active].def.name);
        else if (event.key === "Escape") this.close();
        else return;
        event.preventDefault();
        event.stopPropagation();
      });
      render();
      search.focus();
    });
  }

  place(panel, client) {
    const view = this.doc.defaultView;
    const { width, height } = panel.getBoundingClientRect();
    const [x, y] = client ?? [(view.innerWidth - width) / 2, view.innerHeight * 0.15];
    panel.style.left = `${Math.max(8, Math.min(x, view.innerWidth - width - 8))}px`;
    panel.style.top = `${Math.max(8, Math.min(y, view.innerHeight - height - 8))}px`;
  }

  describe(target, def) {
    const doc = this.doc;
    target.replaceChildren();
    target.append(element(doc, "div", "palette-description-title", `${def.displayName}  ·  ${def.category}`));
    if (def.description) target.append(element(doc, "div", "palette-description-text", def.description));
    const inputs = def.linkableSpecs.filter((spec) => !spec.isWidget).map((spec) => spec.type);
    const outputs = def.outputs.map((output) => output.type);
    if (inputs.length || outputs.length) {
      const io = `${inputs.join(", ") || "—"}  →  ${outputs.join(", ") || "—"}`;
      target.append(element(doc, "div", "palette-description-io", io));
    }
  }

  choose(type) {
    const resolve = this.resolve;
    this.resolve = null;
    this.close();
    resolve?.(type);
  }

  close() {
    this.el?.remove();
    this.backdrop?.remove();
    this.el = null;
    this.backdrop = null;
    const resolve = this.resolve;
    this.resolve = null;
    resolve?.(null);
  }
}
