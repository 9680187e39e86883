// A pack extension written against ComfyUI's frontend modules, as packs write them.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

app.registerExtension({
  name: "nodeflow.test.frontendExtensionPack",
  async setup() {
    const stats = await api.fetchApi("/system_stats").then((response) => response.json());
    window.__packExtension = { ran: true, nodes: app.graph ? "graph" : "none", os: stats.system.os };
  },
});
