/**
 * The queue and history panel: the running prompt (interrupt), pending prompts (cancel, clear), and finished
 * ones with their images and status; a history item's workflow loads back onto the canvas.
 *
 * Reads everything from the server through the ApiClient; what loading a workflow or showing an image means
 * it asks of `editor`. Knows nothing of the graph.
 */
import { element } from "./dialogs.js";

const HISTORY_SHOWN = 50;

/** What became of a history entry: "success", "error" or "interrupted". */
export function historyOutcome(entry) {
  const messages = entry.status?.messages ?? [];
  if (messages.some(([name]) => name === "execution_interrupted")) return "interrupted";
  return entry.status?.status_str === "success" ? "success" : "error";
}

/** The images a history entry produced, in node order. */
export function historyImages(entry) {
  return Object.values(entry.outputs ?? {}).flatMap((output) => output.images ?? []);
}

export class QueuePanel {
  constructor(doc, root, editor) {
    this.doc = doc;
    this.root = root;
    this.editor = editor;
    this.timer = 0;
    this.build();
  }

  get isOpen() {
    return !this.root.hidden;
  }

  build() {
    const doc = this.doc;
    this.root.replaceChildren();
    const header = element(doc, "header", "panel-header");
    header.append(element(doc, "h2", "", "Queue"));
    const close = element(doc, "button", "panel-close", "×");
    close.title = "Close (Q)";
    close.addEventListener("click", () => this.toggle(false));
    header.append(close);
    this.running = element(doc, "section", "queue-section queue-running");
    this.pending = element(doc, "section", "queue-section queue-pending");
    this.history = element(doc, "section", "queue-section queue-history");
    this.root.append(header, this.running, this.pending, this.history);
  }

  toggle(open = !this.isOpen) {
    this.root.hidden = !open;
    this.editor.panelToggled?.(open);
    if (open) this.refresh();
  }

  /** Refresh soon; repeated calls within a moment make one request. */
  scheduleRefresh() {
    if (!this.isOpen) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), 150);
  }

  async refresh() {
    const api = this.editor.api;
    try {
      const [queue, history] = await Promise.all([api.getQueue(), api.getHistory(HISTORY_SHOWN)]);
      this.render(queue, history);
    } catch (error) {
      const message = `Could not read the queue: ${error.message}`;
      this.history.replaceChildren(element(this.doc, "div", "panel-error", message));
    }
  }

  render(queue, history) {
    const doc = this.doc;
    const api = this.editor.api;
    this.running.replaceChildren(this.heading("Running", queue.queue_running.length));
    for (const item of queue.queue_running) {
      const row = this.itemRow(item, "running");
      const stop = element(doc, "button", "danger interrupt-button", "Interrupt");
      stop.addEventListener("click", () => this.act(() => api.interrupt(item[1])));
      row.append(stop);
      this.running.append(row);
    }
    if (!queue.queue_running.length) this.running.append(element(doc, "div", "panel-empty", "Nothing is running."));

    const pendingHeading = this.heading("Pending", queue.queue_pending.length);
    if (queue.queue_pending.length) {
      const clear = element(doc, "button", "small clear-queue-button", "Clear");
      clear.title = "Cancel every pending prompt";
      clear.addEventListener("click", () => this.act(() => api.clearQueue()));
      pendingHeading.append(clear);
    }
    this.pending.replaceChildren(pendingHeading);
    const pending = [...queue.queue_pending].sort((a, b) => a[0] - b[0]);
    for (const item of pending) {
      const row = this.itemRow(item, "pending");
      const cancel = element(doc, "button", "small cancel-button", "Cancel");
      cancel.addEventListener("click", () => this.act(() => api.deleteFromQueue([item[1]])));
      row.append(cancel);
      this.pending.append(row);
    }

    const entries = Object.entries(history).reverse();
    const historyHeading = this.heading("History", entries.length);
    if (entries.length) {
      const clear = element(doc, "button", "small clear-history-button", "Clear");
      clear.title = "Forget the history (saved images stay on disk)";
      clear.addEventListener("click", () => this.act(() => api.clearHistory()));
      historyHeading.append(clear);
    }
    this.history.replaceChildren(historyHeading);
    for (const [promptId, entry] of entries) this.history.append(this.historyRow(promptId, entry));
  }

  heading(title, count) {
    const heading = element(this.doc, "h3", "", `${title} `);
    heading.append(element(this.doc, "span", "count", String(count)));
    return heading;
  }

  itemRow(item, kind) {
    const [number, promptId, prompt] = item;
    const row = element(this.doc, "div", `queue-item ${kind}`);
    row.dataset.promptId = promptId;
    row.append(element(this.doc, "span", "queue-number", `#${number}`),
      element(this.doc, "span", "queue-detail", `${Object.keys(prompt ?? {}).length} nodes · ${promptId.slice(0, 8)}`),
    );
    return row;
  }

  historyRow(promptId, entry) {
    const doc = this.doc;
    const outcome = historyOutcome(entry);
    const row = element(doc, "div", `history-item ${outcome}`);
    row.dataset.promptId = promptId;
    const top = element(doc, "div", "history-top");
    const symbol = { success: "✓", error: "✕", interrupted: "■" }[outcome];
    top.append(element(doc, "span", "history-status", `${symbol} ${outcome}`));
    const started = (entry.status?.messages ?? []).find(([name]) => name === "execution_start")?.[1]?.timestamp;
    if (started) top.append(element(doc, "span", "history-time", new Date(started).toLocaleTimeString()));
    const load = element(doc, "button", "small load-button", "Load");
    load.title = "Load this prompt's workflow onto the canvas";
    load.addEventListener("click", () => this.editor.loadFromHistory(entry));
    const remove = element(doc, "button", "small delete-button", "Delete");
    remove.addEventListener("click", () => this.act(() => this.editor.api.deleteHistory([promptId])));
    top.append(load, remove);
    row.append(top);
    const images = historyImages(entry).map((image) => ({ url: this.editor.api.viewUrl(image), name: image.filename }));
    if (images.length) {
      const strip = element(doc, "div", "history-images");
      images.forEach((image, index) => {
        const img = element(doc, "img", "history-image");
        img.src = image.url;
        img.alt = image.name;
        img.loading = "lazy";
        img.addEventListener("click", () => this.editor.openImages(images, index));
        strip.append(img);
      });
      row.append(strip);
    }
    return row;
  }

  async act(action) {
    try {
      await action();
    } catch (error) {
      this.editor.toast(error.message, { kind: "error" });
    }
    this.refresh();
  }
}
