// Shared loading for the editor's unit tests: the stub catalogue and the engine's workflow fixtures.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { NodeDefs } from "../../../web/js/node_defs.js";

const here = dirname(fileURLToPath(import.meta.url));

export function loadJson(path) {
  return JSON.parse(readFileSync(path, "utf-8"));
}

export function stubDefs() {
  return new NodeDefs(loadJson(join(here, "fixtures", "object_info.json")));
}

export function engineFixture(name) {
  return loadJson(join(here, "..", "..", "engine", "fixtures", name));
}
