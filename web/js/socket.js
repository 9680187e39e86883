/**
 * The websocket client: connects to `/ws?clientId=`, reconnects after drops, and re-dispatches the server's
 * messages as events. JSON messages `{type, data}` become events named by `type` with `data` as detail;
 * binary preview frames (4-byte big-endian type 1, 4-byte format 1=JPEG 2=PNG, image bytes) become
 * "preview" events whose detail is an image Blob. "open" and "close" report the connection itself.
 * Knows nothing of the graph or the DOM beyond WebSocket and Blob.
 */

const PREVIEW_IMAGE = 1;
const IMAGE_TYPES = { 1: "image/jpeg", 2: "image/png" };

export class SocketClient extends EventTarget {
  constructor({ url, WebSocketImpl = globalThis.WebSocket, maxDelayMs = 5000 }) {
    super();
    this.url = url;
    this.WebSocketImpl = WebSocketImpl;
    this.maxDelayMs = maxDelayMs;
    this.attempts = 0;
    this.socket = null;
    this.stopped = false;
  }

  connect() {
    this.stopped = false;
    const socket = new this.WebSocketImpl(this.url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempts = 0;
      socket.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: false } }));
      this.emit("open", {});
    });
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.emit("close", {});
      if (!this.stopped) this.scheduleReconnect();
    });
  }

  close() {
    this.stopped = true;
    this.socket?.close();
  }

  scheduleReconnect() {
    this.attempts += 1;
    const delay = Math.min(this.maxDelayMs, 300 * 2 ** Math.min(this.attempts, 5));
    setTimeout(() => {
      if (!this.stopped) this.connect();
    }, delay);
  }

  receive(data) {
    if (typeof data === "string") {
      let message;
      try {
        message = JSON.parse(data);
      } catch {
        return;
      }
      if (message && typeof message.type === "string") this.emit(message.type, message.data ?? {});
      return;
    }
    const view = new DataView(data);
    if (view.byteLength < 8 || view.getUint32(0) !== PREVIEW_IMAGE) return;
    const mime = IMAGE_TYPES[view.getUint32(4)] ?? "image/jpeg";
    this.emit("preview", new Blob([data.slice(8)], { type: mime }));
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
