/**
 * Node definitions from the server's `/object_info`: which inputs are sockets and which are widgets, the
 * order in which the editor stores widget values, defaults, and the type rule for wires.
 *
 * This is the editor's one place for the node-class contract; it mirrors `engine/input_spec.py` and the
 * widget-layout part of `engine/workflow_format.py`. It knows nothing of the DOM, the server or the graph.
 */

const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);
const ANY_TYPE = "*";
export const CONTROL_MODES = ["fixed", "increment", "decrement", "randomize"];
const ACCEPTED_CONTROL_MODES = new Set([...CONTROL_MODES, "increment-wrap"]);
const UPLOAD_OPTIONS = ["image_upload", "video_upload", "audio_upload", "animated_image_upload"];
const SECTIONS = ["required", "optional", "hidden"];

/** Editor-only node types: drawn and saved by the editor, never sent to the server. */
export const VIRTUAL_TYPES = {
  Reroute: "Reroute",
  Primitive: "PrimitiveNode",
  Note: "Note",
  MarkdownNote: "MarkdownNote",
};

/** One declared input, parsed from `[TYPE, options]`, `[[choices], options]` or `["COMBO", {options}]`. */
export class InputSpec {
  constructor(name, section, type, options = {}, choices = null) {
    this.name = name;
    this.section = section;
    this.type = type;
    this.options = options;
    this.choices = choices;
  }

  static parse(name, section, raw) {
    const entry = typeof raw === "string" ? [raw] : raw;
    if (!Array.isArray(entry) || entry.length === 0) {
      throw new TypeError(`input ${name}: spec must be [TYPE, options], got ${JSON.stringify(raw)}`);
    }
    const [kind, maybeOptions] = entry;
    const options = maybeOptions && typeof maybeOptions === "object" && !Array.isArray(maybeOptions)
      ? { ...maybeOptions } : {};
    if (Array.isArray(kind)) return new InputSpec(name, section, "COMBO", options, [...kind]);
    if (kind === "COMBO") return new InputSpec(name, section, "COMBO", options, [...(options.options ?? [])]);
    return new InputSpec(name, section, String(kind), options);
  }

  get isWidgetType() {
    return WIDGET_TYPES.has(this.type);
  }

  /** Drawn as a widget (a value on the node) rather than only as a socket. */
  get isWidget() {
    return this.section !== "hidden" && this.isWidgetType && !this.options.forceInput;
  }

  get hasControlAfterGenerate() {
    if ("control_after_generate" in this.options) return Boolean(this.options.control_after_generate);
    return this.type === "INT" && (this.name === "seed" || this.name === "noise_seed");
  }

  get tooltip() {
    return this.options.tooltip ?? "";
  }

  get hasDefault() {
    return "default" in this.options || (this.type === "COMBO" && this.choices.length > 0);
  }

  get defaultValue() {
    if ("default" in this.options) return this.options.default;
    if (this.type === "COMBO") return this.choices[0];
    return { INT: 0, FLOAT: 0, STRING: "", BOOLEAN: false }[this.type];
  }
}

/** One node class as the catalogue describes it. */
export class NodeDef {
  constructor(name, info) {
    this.name = name;
    this.displayName = info.display_name || name;
    this.description = info.description ?? "";
    this.category = info.category ?? "";
    this.outputNode = Boolean(info.output_node);
    this.deprecated = Boolean(info.deprecated);
    this.experimental = Boolean(info.experimental);
    this.source = info.python_module ?? "";
    this.virtual = Boolean(info.virtual);
    this.inputs = parseInputs(info.input ?? {}, info.input_order);
    const names = info.output_name ?? [];
    const tooltips = info.output_tooltips ?? [];
    const isList = info.output_is_list ?? [];
    this.outputs = (info.output ?? []).map((type, index) => ({
      type: Array.isArray(type) ? "COMBO" : String(type),
      name: names[index] ?? String(type),
      isList: Boolean(isList[index]),
      tooltip: tooltips[index] ?? "",
    }));
  }

  input(name) {
    return this.inputs.find((spec) => spec.name === name) ?? null;
  }

  /** The inputs the editor draws as widgets, in the order it stores their values. */
  get widgetSpecs() {
    return this.inputs.filter((spec) => spec.isWidget);
  }

  /** Every input that can take a wire (widgets can too), in declaration order. */
  get linkableSpecs() {
    return this.inputs.filter((spec) => spec.section !== "hidden");
  }

  get uploadOption() {
    const required = this.inputs.filter((spec) => spec.section === "required");
    for (const spec of required) {
      const option = UPLOAD_OPTIONS.find((name) => spec.options[name]);
      if (option) return { option, input: spec.name };
    }
    return null;
  }
}

function parseInputs(declared, order) {
  const specs = [];
  const seen = new Set();
  for (const section of SECTIONS) {
    const entries = declared[section] ?? {};
    const names = order?.[section] ?? Object.keys(entries);
    for (const name of names) {
      if (!(name in entries) || seen.has(name)) continue;
      seen.add(name);
      specs.push(InputSpec.parse(name, section, entries[name]));
    }
  }
  return specs;
}

/** Whether an output of `outputType` may feed an input of `inputType`: `*` matches anything, "A,B" is a union. */
export function typesCompatible(outputType, inputType) {
  const outputs = typeSet(outputType);
  const inputs = typeSet(inputType);
  if (outputs.size === 0 || inputs.size === 0) return true;
  if (outputs.has(ANY_TYPE) || inputs.has(ANY_TYPE)) return true;
  for (const type of outputs) if (inputs.has(type)) return true;
  return false;
}

function typeSet(type) {
  if (type === null || type === undefined || type === "") return new Set();
  return new Set(String(type).split(",").map((part) => part.trim()).filter(Boolean));
}

// ---- positional widget values --------------------------------------------------------------------------

/** The places in `widgets_values` for these specs: a widget's value, or an extra stored beside it. */
export function widgetLayout(specs, { controls = true, upload = true } = {}) {
  const required = specs.filter((spec) => spec.section === "required");
  const optional = specs.filter((spec) => spec.section !== "required");
  const layout = required.flatMap((spec) => positions(spec, controls));
  const hasUpload = required.some((spec) => UPLOAD_OPTIONS.some((option) => spec.options[option]));
  if (upload && hasUpload) layout.push({ kind: "upload", name: "upload" });
  layout.push(...optional.flatMap((spec) => positions(spec, controls)));
  return layout;
}

function positions(spec, controls) {
  const places = [{ kind: "widget", name: spec.name }];
  if (controls && spec.hasControlAfterGenerate) {
    places.push({ kind: "control", name: "control_after_generate", of: spec.name });
    if (spec.type === "COMBO") places.push({ kind: "filter", name: "control_filter_list", of: spec.name });
  }
  return places;
}

/** The layout that fits stored values: as the server's converter, the first plausible one of the right length. */
export function chooseLayout(specs, stored) {
  const candidates = [[true, false], [true, true], [false, false], [false, true]]
    .map(([controls, upload]) => widgetLayout(specs, { controls, upload }));
  const plausible = candidates.filter((layout) => fits(layout, stored));
  const exact = plausible.filter((layout) => layout.length === stored.length);
  return (exact[0] ?? plausible[0] ?? candidates[0]);
}

function fits(layout, stored) {
  return layout.every((place, index) => {
    if (index >= stored.length) return true;
    const value = stored[index];
    if (place.kind === "control") return typeof value === "string" && ACCEPTED_CONTROL_MODES.has(value);
    if (place.kind === "filter" || place.kind === "upload") return value === null || typeof value === "string";
    return true;
  });
}

/** Name stored `widgets_values` (a list or a name -> value object); widgets without a value get defaults. */
export function mapWidgetValues(specs, stored) {
  const values = {};
  if (Array.isArray(stored)) {
    chooseLayout(specs, stored).forEach((place, index) => {
      if (place.kind === "widget" && index < stored.length) values[place.name] = stored[index];
    });
  } else if (stored && typeof stored === "object") {
    for (const spec of specs) if (spec.name in stored) values[spec.name] = stored[spec.name];
  }
  for (const spec of specs) {
    if (!(spec.name in values) && spec.hasDefault) values[spec.name] = spec.defaultValue;
  }
  return values;
}

/** The extras (control modes, filters) stored beside widgets, by the widget they follow. */
export function mapControlValues(specs, stored) {
  const controls = {};
  if (!Array.isArray(stored)) return controls;
  chooseLayout(specs, stored).forEach((place, index) => {
    if (place.kind === "control" && index < stored.length) controls[place.of] = stored[index];
  });
  return controls;
}

// ---- the catalogue -------------------------------------------------------------------------------------

const VIRTUAL_INFO = {
  [VIRTUAL_TYPES.Reroute]: {
    display_name: "Reroute", category: "utils", virtual: true,
    description: "Passes a wire through a point you can move, to tidy long wires.",
    input: { required: { "": ["*"] } }, output: ["*"], output_name: [""],
  },
  [VIRTUAL_TYPES.Primitive]: {
    display_name: "Primitive", category: "utils", virtual: true,
    description: "One value (number, text, choice) that feeds the widget inputs it is wired to.",
    input: {}, output: ["*"], output_name: ["connect to widget input"],
  },
  [VIRTUAL_TYPES.Note]: {
    display_name: "Note", category: "utils", virtual: true,
    description: "A text note on the canvas; it is not run.",
    input: {}, output: [],
  },
  [VIRTUAL_TYPES.MarkdownNote]: {
    display_name: "Markdown Note", category: "utils", virtual: true,
    description: "A note written in Markdown; it is not run.",
    input: {}, output: [],
  },
};

/** All node classes the editor knows: the server's catalogue plus the editor-only ones. */
export class NodeDefs {
  constructor(objectInfo = {}) {
    this.byName = new Map();
    for (const [name, info] of Object.entries(VIRTUAL_INFO)) this.byName.set(name, new NodeDef(name, info));
    for (const [name, info] of Object.entries(objectInfo)) {
      try {
        this.byName.set(name, new NodeDef(name, info));
      } catch (error) {
        console.warn(`node ${name} has an unreadable definition`, error);
      }
    }
  }

  get(name) {
    return this.byName.get(name) ?? null;
  }

  has(name) {
    return this.byName.has(name);
  }

  isVirtual(name) {
    return Boolean(this.byName.get(name)?.virtual);
  }

  all() {
    return [...this.byName.values()];
  }
}
