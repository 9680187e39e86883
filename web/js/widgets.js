/**
 * Widgets: the controls that edit a node's input values, made from the input specs of `/object_info`.
 *
 * INT/FLOAT: a number with min/max/step, typed or dragged, with step arrows. STRING: a line, or a text area
 * when `multiline`. COMBO: a list (a value that is not in it is kept and marked missing). BOOLEAN: a toggle.
 * The "control after generate" mode of seed-like inputs is a list of its own. Extensions may supply widgets
 * for other types. Each widget reports edits through `onChange(value)` and knows nothing of the graph.
 */
import { CONTROL_MODES } from "./node_defs.js";
import { element } from "./dialogs.js";

const DRAG_PIXELS_PER_STEP = 6;
/** ComfyUI's range for "randomize": large but exactly representable in a double. */
const RANDOM_SEED_LIMIT = 1125899906842624;

/**
 * A control for one stored widget value. `widget` is the node's record {kind, name, value}; `spec` the input
 * spec (for kind "widget"); `custom` an extension's factory for a non-standard type, if any.
 * Returns {element, setValue(value), setDisabled(disabled)} or null for values that are not shown.
 */
export function createWidget(doc, { widget, spec, onChange, custom = null, node = null, onError = null }) {
  if (widget.kind === "control") return controlWidget(doc, widget, onChange);
  if (widget.kind !== "widget") return null;
  if (custom) {
    try {
      return customWidget(doc, custom, widget, spec, onChange, node);
    } catch (error) {
      onError?.(error);
    }
  }
  switch (spec?.type) {
    case "INT":
    case "FLOAT":
      return numberWidget(doc, widget, spec, onChange);
    case "STRING":
      return (spec.options.multiline ? textAreaWidget : textWidget)(doc, widget, spec, onChange);
    case "COMBO":
      return comboWidget(doc, widget, spec, onChange);
    case "BOOLEAN":
      return toggleWidget(doc, widget, spec, onChange);
    default:
      return readOnlyWidget(doc, widget);
  }
}

// ---- numbers -------------------------------------------------------------------------------------------

function decimalsOf(step) {
  const text = String(step);
  if (text.includes("e-")) return Number(text.split("e-")[1]);
  return text.split(".")[1]?.length ?? 0;
}

/** The precision a FLOAT widget rounds to: its `round` option, else its step's decimals. */
function floatPrecision(spec) {
  const round = spec.options.round;
  if (typeof round === "number" && round > 0) return decimalsOf(round);
  return Math.max(decimalsOf(spec.options.step ?? 0.01), 0);
}

/** Parse, clamp to min/max and round a number as the widget stores it; null when not a number. */
export function normalizeNumber(spec, raw) {
  let value = typeof raw === "number" ? raw : Number(String(raw).trim());
  if (!Number.isFinite(value)) return null;
  const { min, max } = spec.options;
  const upper = typeof max === "number" ? max : Infinity;
  const lower = typeof min === "number" ? min : -Infinity;
  const clamp = (number) => Math.min(upper, Math.max(lower, number));
  value = clamp(value);
  if (spec.type === "INT") {
    const step = spec.options.step && spec.options.step > 1 ? spec.options.step : 1;
    value = Math.round(value / step) * step;
    return clamp(value);
  }
  const precision = floatPrecision(spec);
  return clamp(Number(value.toFixed(precision)));
}

function formatNumber(spec, value) {
  if (typeof value !== "number") return String(value ?? "");
  if (spec.type === "INT") return String(value);
  return String(Number(value.toFixed(floatPrecision(spec))));
}

function numberStep(spec) {
  if (spec.type === "INT") return spec.options.step && spec.options.step > 0 ? spec.options.step : 1;
  return spec.options.step ?? 10 ** -floatPrecision(spec);
}

function numberWidget(doc, widget, spec, onChange) {
  const root = element(doc, "div", "widget number-widget");
  const decrease = element(doc, "button", "step-button", "◀");
  const label = element(doc, "span", "widget-label number-drag", widget.name);
  const input = element(doc, "input", "widget-input");
  const increase = element(doc, "button", "step-button", "▶");
  decrease.type = increase.type = "button";
  decrease.tabIndex = increase.tabIndex = -1;
  decrease.setAttribute("aria-label", `decrease ${widget.name}`);
  increase.setAttribute("aria-label", `increase ${widget.name}`);
  input.inputMode = spec.type === "INT" ? "numeric" : "decimal";
  input.setAttribute("aria-label", widget.name);
  label.title = "Drag left or right to change";
  root.append(decrease, label, input, increase);
  let value = widget.value;
  const show = (shown) => {
    input.value = formatNumber(spec, shown);
  };
  const commit = (raw) => {
    const next = normalizeNumber(spec, raw);
    if (next === null) {
      show(value);
      return;
    }
    show(next);
    if (next !== value) {
      value = next;
      onChange(next);
    }
  };
  input.addEventListener("change", () => commit(input.value));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") input.blur();
    if (event.key === "Escape") {
      show(value);
      input.blur();
    }
  });
  decrease.addEventListener("click", () => commit(Number(value) - numberStep(spec)));
  increase.addEventListener("click", () => commit(Number(value) + numberStep(spec)));
  label.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || input.disabled) return;
    event.preventDefault();
    label.setPointerCapture(event.pointerId);
    const startX = event.clientX;
    const startValue = Number(value);
    let dragged = startValue;
    const move = (moveEvent) => {
      const steps = Math.round((moveEvent.clientX - startX) / DRAG_PIXELS_PER_STEP);
      dragged = normalizeNumber(spec, startValue + steps * numberStep(spec)) ?? startValue;
      show(dragged);
    };
    const end = () => {
      label.removeEventListener("pointermove", move);
      label.removeEventListener("pointerup", end);
      label.removeEventListener("pointercancel", end);
      commit(dragged);
    };
    label.addEventListener("pointermove", move);
    label.addEventListener("pointerup", end);
    label.addEventListener("pointercancel", end);
  });
  show(value);
  return {
    element: root,
    setValue(next) {
      value = next;
      if (doc.activeElement !== input) show(next);
    },
    setDisabled(disabled) {
      input.disabled = decrease.disabled = increase.disabled = disabled;
    },
  };
}

// ---- text ----------------------------------------------------------------------------------------------

function textWidget(doc, widget, spec, onChange) {
  const root = element(doc, "label", "widget text-widget");
  const label = element(doc, "span", "widget-label", widget.name);
  const input = element(doc, "input", "widget-input");
  input.type = "text";
  input.value = widget.value ?? "";
  input.placeholder = spec.options.placeholder ?? "";
  root.append(label, input);
  input.addEventListener("change", () => onChange(input.value));
  return {
    element: root,
    setValue(next) {
      if (doc.activeElement !== input) input.value = next ?? "";
    },
    setDisabled(disabled) {
      input.disabled = disabled;
    },
  };
}

function textAreaWidget(doc, widget, spec, onChange) {
  const area = element(doc, "textarea", "widget widget-input multiline");
  area.value = widget.value ?? "";
  area.placeholder = spec.options.placeholder ?? widget.name;
  area.setAttribute("aria-label", widget.name);
  area.spellcheck = false;
  area.addEventListener("change", () => onChange(area.value));
  return {
    element: area,
    setValue(next) {
      if (doc.activeElement !== area) area.value = next ?? "";
    },
    setDisabled(disabled) {
      area.disabled = disabled;
    },
  };
}

// ---- lists and toggles ---------------------------------------------------------------------------------

function comboWidget(doc, widget, spec, onChange) {
  const root = element(doc, "label", "widget combo-widget");
  const label = element(doc, "span", "widget-label", widget.name);
  const select = element(doc, "select", "widget-input");
  select.setAttribute("aria-label", widget.name);
  root.append(label, select);
  let value = widget.value;
  let choices = [];
  const fill = () => {
    choices = [...spec.choices];
    const missing = !choices.includes(value);
    if (missing) choices.push(value);
    select.replaceChildren(...choices.map((choice, index) => {
      const isMissing = missing && index === choices.length - 1;
      const option = element(doc, "option", "", isMissing ? `${choice} (missing)` : String(choice));
      option.value = String(index);
      return option;
    }));
    select.value = String(choices.indexOf(value));
    root.classList.toggle("missing-value", missing);
    root.title = missing ? `${value} is not available on the server` : (spec.tooltip ?? "");
  };
  select.addEventListener("change", () => {
    value = choices[Number(select.value)];
    fill();
    onChange(value);
  });
  fill();
  return {
    element: root,
    setValue(next) {
      value = next;
      fill();
    },
    setDisabled(disabled) {
      select.disabled = disabled;
    },
    refreshChoices: fill,
  };
}

function toggleWidget(doc, widget, spec, onChange) {
  const root = element(doc, "label", "widget toggle-widget");
  const label = element(doc, "span", "widget-label", widget.name);
  const box = element(doc, "input");
  box.type = "checkbox";
  const state = element(doc, "span", "toggle-state");
  root.append(label, state, box);
  const show = (checked) => {
    box.checked = Boolean(checked);
    state.textContent = checked ? (spec.options.label_on ?? "true") : (spec.options.label_off ?? "false");
  };
  box.addEventListener("change", () => {
    show(box.checked);
    onChange(box.checked);
  });
  show(widget.value);
  return {
    element: root,
    setValue: show,
    setDisabled(disabled) {
      box.disabled = disabled;
    },
  };
}

function controlWidget(doc, widget, onChange) {
  const root = element(doc, "label", "widget combo-widget control-widget");
  const label = element(doc, "span", "widget-label", "control after generate");
  const select = element(doc, "select", "widget-input");
  select.setAttribute("aria-label", `${widget.of} control after generate`);
  const modes = CONTROL_MODES.includes(widget.value) ? CONTROL_MODES : [...CONTROL_MODES, widget.value];
  select.replaceChildren(...modes.map((mode) => {
    const option = element(doc, "option", "", mode);
    option.value = mode;
    return option;
  }));
  select.value = widget.value;
  select.addEventListener("change", () => onChange(select.value));
  root.append(label, select);
  return {
    element: root,
    setValue(next) {
      select.value = next;
    },
    setDisabled(disabled) {
      select.disabled = disabled;
    },
  };
}

/** An extension's widget: it fills a container that already shows the input's name. */
function customWidget(doc, custom, widget, spec, onChange, node) {
  const root = element(doc, "div", "widget custom-widget");
  root.dataset.extension = custom.name;
  root.append(element(doc, "span", "widget-label", widget.name));
  const handle = custom.create(root, widget.value, onChange, { spec, node, name: widget.name }) ?? {};
  return {
    element: root,
    setValue: (value) => handle.setValue?.(value),
    setDisabled(disabled) {
      if (handle.setDisabled) handle.setDisabled(disabled);
      else {
        for (const control of root.querySelectorAll("input, select, textarea, button")) control.disabled = disabled;
      }
    },
  };
}

function readOnlyWidget(doc, widget) {
  const root = element(doc, "div", "widget readonly-widget");
  const show = (value) => {
    root.textContent = `${widget.name}: ${typeof value === "object" ? JSON.stringify(value) : String(value)}`;
  };
  show(widget.value);
  return { element: root, setValue: show, setDisabled() {} };
}

// ---- control after generate ------------------------------------------------------------------------------

/**
 * The value a widget takes after a queue under its control mode: fixed keeps it, increment/decrement step
 * within min/max, randomize draws a new one. `random` is injectable for tests.
 */
export function valueAfterGenerate(spec, value, mode, random = Math.random) {
  if (mode === "fixed" || !spec) return value;
  if (spec.type === "COMBO") {
    const choices = spec.choices;
    if (!choices.length) return value;
    const index = choices.indexOf(value);
    if (mode === "randomize") return choices[Math.floor(random() * choices.length)];
    if (mode === "increment") return choices[Math.min(index + 1, choices.length - 1)];
    if (mode === "increment-wrap") return choices[(index + 1) % choices.length];
    if (mode === "decrement") return choices[Math.max(index - 1, 0)];
    return value;
  }
  const min = typeof spec.options.min === "number" ? spec.options.min : 0;
  const max = Math.min(typeof spec.options.max === "number" ? spec.options.max : RANDOM_SEED_LIMIT, RANDOM_SEED_LIMIT);
  const step = spec.type === "INT" ? 1 : numberStep(spec);
  switch (mode) {
    case "increment":
      return Math.min(Number(value) + step, max);
    case "increment-wrap":
      return Number(value) + step > max ? min : Number(value) + step;
    case "decrement":
      return Math.max(Number(value) - step, min);
    case "randomize": {
      const drawn = min + random() * (max - min);
      return spec.type === "INT" ? Math.floor(drawn) : normalizeNumber(spec, drawn);
    }
    default:
      return value;
  }
}
