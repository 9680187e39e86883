// Prints, for every conversion case, the editor workflow and what the editor's converter makes of it
// ({api} or {error}), as JSON for tests/web/test_conversion_parity.py. Usage: node conversion_parity.mjs INFO.json
import { readFileSync } from "node:fs";

import { NodeDefs } from "../../web/js/node_defs.js";
import { editorToApi } from "../../web/js/workflow_api.js";
import { CASES } from "./unit/conversion_cases.mjs";

const defs = new NodeDefs(JSON.parse(readFileSync(process.argv[2], "utf-8")));
const results = {};
for (const [name, make] of Object.entries(CASES)) {
  const workflow = make();
  try {
    results[name] = { workflow, api: editorToApi(structuredClone(workflow), defs) };
  } catch (error) {
    results[name] = { workflow, error: String(error.message) };
  }
}
process.stdout.write(JSON.stringify(results));
