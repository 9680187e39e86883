/**
 * The page's entry point: reads the auth token from the page URL (if any), builds the App with the
 * browser's real objects and starts it. Nothing else lives here.
 */
import { ApiClient } from "./api.js";
import { App } from "./app.js";

const pageUrl = new URL(window.location.href);
const token = pageUrl.searchParams.get("token");

function socketUrl(clientId) {
  const url = new URL("/ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("clientId", clientId);
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

const app = new App({
  doc: document,
  win: window,
  api: new ApiClient({ token }),
  storage: window.localStorage,
  sessionStorage: window.sessionStorage,
  socketUrl,
});
app.start().catch((error) => {
  console.error(error);
  app.showStartupError(error);
});
