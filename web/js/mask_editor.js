/**
 * The mask painter for inpainting: paint over a loaded image, then save the mask. The saved mask is an image
 * whose alpha is 0 where painted, which the server's `/upload/mask` puts into the original's alpha channel,
 * so LoadImage's MASK output (1 - alpha) is 1 where you painted, as in ComfyUI. A mask already in the image's
 * alpha is shown for further editing. Knows nothing of the graph; uploading is the caller's.
 */
import { element } from "./dialogs.js";

const MASK_COLOR = [255, 40, 80];

export class MaskEditor {
  constructor(doc) {
    this.doc = doc;
  }

  /** Open on `imageUrl`; `save(maskBlob)` is awaited when the user saves. Resolves when closed. */
  open({ imageUrl, title = "Edit mask", save }) {
    const doc = this.doc;
    return new Promise((resolve) => {
      const dialog = element(doc, "dialog", "mask-editor");
      const bar = element(doc, "div", "mask-toolbar");
      bar.append(element(doc, "span", "mask-title", title));
      const sizeLabel = element(doc, "label", "mask-size", "Brush ");
      const size = element(doc, "input");
      size.type = "range";
      size.min = "1";
      size.max = "200";
      size.value = "24";
      sizeLabel.append(size);
      const paint = element(doc, "button", "mask-paint active", "Paint");
      const erase = element(doc, "button", "mask-erase", "Erase");
      const clear = element(doc, "button", "mask-clear", "Clear");
      const invert = element(doc, "button", "mask-invert", "Invert");
      const cancel = element(doc, "button", "mask-cancel", "Cancel");
      const saveButton = element(doc, "button", "primary mask-save", "Save mask");
      for (const button of [paint, erase, clear, invert, cancel, saveButton]) button.type = "button";
      bar.append(sizeLabel, paint, erase, clear, invert, cancel, saveButton);
      const stage = element(doc, "div", "mask-stage");
      const picture = element(doc, "canvas", "mask-image");
      const mask = element(doc, "canvas", "mask-canvas");
      const cursor = element(doc, "div", "mask-cursor");
      stage.append(picture, mask, cursor);
      const hint = element(doc, "div", "mask-hint", "Paint where the image should change. Right-drag erases.");
      dialog.append(bar, stage, hint);
      doc.body.append(dialog);
      dialog.showModal();

      let erasing = false;
      const setErasing = (value) => {
        erasing = value;
        paint.classList.toggle("active", !value);
        erase.classList.toggle("active", value);
      };
      paint.addEventListener("click", () => setErasing(false));
      erase.addEventListener("click", () => setErasing(true));
      const maskContext = mask.getContext("2d", { willReadFrequently: true });
      clear.addEventListener("click", () => maskContext.clearRect(0, 0, mask.width, mask.height));
      invert.addEventListener("click", () => invertMask(maskContext, mask));
      const finish = () => {
        dialog.close();
        dialog.remove();
        resolve();
      };
      cancel.addEventListener("click", finish);
      dialog.addEventListener("cancel", (event) => {
        event.preventDefault();
        finish();
      });
      saveButton.addEventListener("click", async () => {
        saveButton.disabled = true;
        try {
          await save(await maskBlob(doc, maskContext, mask));
          finish();
        } catch (error) {
          saveButton.disabled = false;
          hint.textContent = `Could not save the mask: ${error.message}`;
          hint.classList.add("error");
        }
      });

      const image = new Image();
      image.addEventListener("load", () => {
        for (const canvas of [picture, mask]) {
          canvas.width = image.naturalWidth;
          canvas.height = image.naturalHeight;
        }
        const context = picture.getContext("2d", { willReadFrequently: true });
        context.drawImage(image, 0, 0);
        loadExistingMask(context, maskContext, image.naturalWidth, image.naturalHeight);
        fitStage(stage, picture, mask);
        dialog.dataset.ready = "true";
      });
      image.addEventListener("error", () => {
        hint.textContent = "The image could not be loaded.";
        hint.classList.add("error");
      });
      image.src = imageUrl;

      let last = null;
      const toCanvas = (event) => {
        const rect = mask.getBoundingClientRect();
        return [(event.clientX - rect.left) * (mask.width / rect.width),
          (event.clientY - rect.top) * (mask.height / rect.height)];
      };
      const brush = () => Number(size.value) * (mask.width / mask.getBoundingClientRect().width || 1);
      const stroke = (from, to, removing) => {
        maskContext.globalCompositeOperation = removing ? "destination-out" : "source-over";
        maskContext.strokeStyle = `rgb(${MASK_COLOR.join(",")})`;
        maskContext.fillStyle = maskContext.strokeStyle;
        maskContext.lineWidth = brush();
        maskContext.lineCap = "round";
        maskContext.beginPath();
        maskContext.moveTo(...from);
        maskContext.lineTo(...to);
        maskContext.stroke();
        maskContext.beginPath();
        maskContext.arc(to[0], to[1], brush() / 2, 0, Math.PI * 2);
        maskContext.fill();
      };
      mask.addEventListener("contextmenu", (event) => event.preventDefault());
      mask.addEventListener("pointerdown", (event) => {
        mask.setPointerCapture(event.pointerId);
        last = toCanvas(event);
        stroke(last, last, erasing || event.button === 2);
      });
      mask.addEventListener("pointermove", (event) => {
        const rect = mask.getBoundingClientRect();
        const diameter = Number(size.value);
        Object.assign(cursor.style, { width: `${diameter}px`, height: `${diameter}px`,
          left: `${event.clientX - rect.left + mask.offsetLeft - diameter / 2}px`,
          top: `${event.clientY - rect.top + mask.offsetTop - diameter / 2}px` });
        if (!last) return;
        const point = toCanvas(event);
        stroke(last, point, erasing || (event.buttons & 2) === 2);
        last = point;
      });
      const stop = () => {
        last = null;
      };
      mask.addEventListener("pointerup", stop);
      mask.addEventListener("pointercancel", stop);
    });
  }
}

/** Show the image's existing transparency as painted mask. */
function loadExistingMask(imageContext, maskContext, width, height) {
  const pixels = imageContext.getImageData(0, 0, width, height).data;
  const painted = maskContext.createImageData(width, height);
  let any = false;
  for (let i = 0; i < pixels.length; i += 4) {
    const masked = 255 - pixels[i + 3];
    if (masked === 0) continue;
    any = true;
    painted.data.set([...MASK_COLOR, masked], i);
  }
  if (any) maskContext.putImageData(painted, 0, 0);
}

function invertMask(context, canvas) {
  const data = context.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < data.data.length; i += 4) {
    data.data.set([...MASK_COLOR, 255 - data.data[i + 3]], i);
  }
  context.putImageData(data, 0, 0);
}

/** The mask to upload: black, opaque where nothing was painted, transparent where painted. */
function maskBlob(doc, context, canvas) {
  const painted = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const output = element(doc, "canvas");
  output.width = canvas.width;
  output.height = canvas.height;
  const outContext = output.getContext("2d");
  const result = outContext.createImageData(canvas.width, canvas.height);
  for (let i = 0; i < painted.length; i += 4) result.data[i + 3] = 255 - painted[i + 3];
  outContext.putImageData(result, 0, 0);
  return new Promise((resolve, reject) => {
    output.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("could not encode the mask"))), "image/png");
  });
}

function fitStage(stage, ...canvases) {
  const { width, height } = stage.getBoundingClientRect();
  const natural = canvases[0];
  const scale = Math.min(width / natural.width, height / natural.height, 4);
  for (const canvas of canvases) {
    canvas.style.width = `${natural.width * scale}px`;
    canvas.style.height = `${natural.height * scale}px`;
  }
}
