/**
 * Small pieces of page UI shared by the editor: toasts, the hint that follows a refused wire, context menus,
 * the image lightbox and a text prompt. Each takes the document it draws into; none knows about the graph.
 */

/** Show a message at the bottom of the page for a few seconds; `kind` is "info", "error" or "success". */
export function toast(doc, message, { kind = "info", details = "", timeout = 5000 } = {}) {
  let stack = doc.getElementById("toasts");
  if (!stack) {
    stack = doc.createElement("div");
    stack.id = "toasts";
    stack.setAttribute("aria-live", "polite");
    doc.body.append(stack);
  }
  const item = element(doc, "div", `toast toast-${kind}`);
  item.setAttribute("role", kind === "error" ? "alert" : "status");
  item.append(element(doc, "div", "toast-message", message));
  if (details) item.append(element(doc, "pre", "toast-details", details));
  const close = element(doc, "button", "toast-close", "×");
  close.title = "Dismiss";
  close.addEventListener("click", () => item.remove());
  item.append(close);
  stack.append(item);
  if (timeout > 0) setTimeout(() => item.remove(), timeout);
  return item;
}

/** A short message by the pointer, e.g. why a wire was refused. */
export function showHint(doc, message, clientX, clientY, timeout = 2500) {
  doc.querySelectorAll(".wire-hint").forEach((old) => old.remove());
  const hint = element(doc, "div", "wire-hint", message);
  hint.setAttribute("role", "status");
  hint.style.left = `${clientX + 14}px`;
  hint.style.top = `${clientY + 10}px`;
  doc.body.append(hint);
  setTimeout(() => hint.remove(), timeout);
  return hint;
}

/**
 * A context menu at the pointer. `items` are {label, action, checked?, disabled?} or {separator: true};
 * closes on choice, Escape or a click elsewhere.
 */
export function contextMenu(doc, items, clientX, clientY) {
  closeMenus(doc);
  const menu = element(doc, "div", "context-menu");
  menu.setAttribute("role", "menu");
  for (const item of items) {
    if (item.separator) {
      menu.append(element(doc, "div", "menu-separator"));
      continue;
    }
    const entry = element(doc, "button", "menu-item", `${item.checked ? "✓ " : ""}${item.label}`);
    entry.setAttribute("role", "menuitem");
    entry.disabled = Boolean(item.disabled);
    entry.addEventListener("click", () => {
      closeMenus(doc);
      item.action();
    });
    menu.append(entry);
  }
  doc.body.append(menu);
  const view = doc.defaultView;
  const { width, height } = menu.getBoundingClientRect();
  menu.style.left = `${Math.min(clientX, view.innerWidth - width - 4)}px`;
  menu.style.top = `${Math.max(4, Math.min(clientY, view.innerHeight - height - 4))}px`;
  const dismiss = (event) => {
    if (event.type === "keydown" && event.key !== "Escape") return;
    if (event.type === "pointerdown" && menu.contains(event.target)) return;
    closeMenus(doc);
  };
  menu.dismiss = dismiss;
  setTimeout(() => {
    doc.addEventListener("pointerdown", dismiss, true);
    doc.addEventListener("keydown", dismiss, true);
  });
  return menu;
}

function closeMenus(doc) {
  doc.querySelectorAll(".context-menu").forEach((menu) => {
    doc.removeEventListener("pointerdown", menu.dismiss, true);
    doc.removeEventListener("keydown", menu.dismiss, true);
    menu.remove();
  });
}

/** A full-size view of images with download links; `images` are {url, name}. */
export function lightbox(doc, images, startIndex = 0) {
  let index = startIndex;
  const overlay = element(doc, "div", "lightbox");
  overlay.setAttribute("role", "dialog");
  overlay.setAttribute("aria-label", "Image viewer");
  const picture = element(doc, "img", "lightbox-image");
  const caption = element(doc, "div", "lightbox-caption");
  const download = element(doc, "a", "lightbox-download button", "Download");
  const previous = element(doc, "button", "lightbox-prev", "‹");
  const next = element(doc, "button", "lightbox-next", "›");
  const close = element(doc, "button", "lightbox-close", "×");
  close.title = "Close (Esc)";
  const show = () => {
    const image = images[index];
    picture.src = image.url;
    picture.alt = image.name;
    download.href = image.url;
    download.download = image.name;
    caption.textContent = `${image.name}${images.length > 1 ? ` (${index + 1} of ${images.length})` : ""}`;
    previous.hidden = next.hidden = images.length < 2;
  };
  const step = (delta) => {
    index = (index + delta + images.length) % images.length;
    show();
  };
  const onKey = (event) => {
    if (event.key === "Escape") finish();
    else if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
    else return;
    event.stopPropagation();
    event.preventDefault();
  };
  const finish = () => {
    doc.removeEventListener("keydown", onKey, true);
    overlay.remove();
  };
  previous.addEventListener("click", () => step(-1));
  next.addEventListener("click", () => step(1));
  close.addEventListener("click", finish);
  overlay.addEventListener("click", (event) => {
    if (event.target === overlay) finish();
  });
  doc.addEventListener("keydown", onKey, true);
  const bar = element(doc, "div", "lightbox-bar");
  bar.append(caption, download, close);
  overlay.append(bar, previous, picture, next);
  doc.body.append(overlay);
  show();
  return overlay;
}

/** Ask for a line of text in a small dialog; resolves to the text, or null when cancelled. */
export function askText(doc, title, initial = "") {
  return new Promise((resolve) => {
    const dialog = element(doc, "dialog", "text-dialog");
    const form = element(doc, "form");
    form.method = "dialog";
    const label = element(doc, "label", "", title);
    const field = element(doc, "input");
    field.value = initial;
    label.append(field);
    const buttons = element(doc, "div", "dialog-buttons");
    const cancel = element(doc, "button", "", "Cancel");
    cancel.value = "cancel";
    cancel.type = "button";
    const ok = element(doc, "button", "primary", "OK");
    ok.value = "ok";
    buttons.append(cancel, ok);
    form.append(label, buttons);
    dialog.append(form);
    doc.body.append(dialog);
    cancel.addEventListener("click", () => dialog.close("cancel"));
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" ? field.value : null);
      dialog.remove();
    });
    dialog.showModal();
    field.select();
  });
}

/** `document.createElement` with a class and text. */
export function element(doc, tag, className = "", text = "") {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}
