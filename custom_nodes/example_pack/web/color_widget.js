// Editor extension of the example pack: a colour picker for every STRING input named "color" on its nodes.
// Loaded by the editor from /extensions/example_pack/color_widget.js (see web/README.md for the API).
export default function register(editor) {
  editor.registerWidget({
    name: "example-color",
    matches: (nodeType, inputName) => nodeType.startsWith("Example") && inputName === "color",
    create(container, value, onChange) {
      const input = document.createElement("input");
      input.type = "color";
      input.value = /^#[0-9a-f]{6}$/i.test(value) ? value : "#ffffff";
      input.addEventListener("input", () => onChange(input.value));
      container.appendChild(input);
      return { setValue: (next) => { input.value = next; } };
    },
  });
}
