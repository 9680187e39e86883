/**
 * Reading the text chunks of a PNG file (tEXt, zTXt, iTXt), where SaveImage stores the `workflow` (editor
 * format) and `prompt` (API format) as ComfyUI does. Pure: bytes in, strings out; no DOM.
 */

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

export class PngError extends Error {}

/** The text chunks of a PNG, keyword -> text; throws PngError if `buffer` is not a PNG. */
export async function readPngText(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 8 || SIGNATURE.some((value, index) => bytes[index] !== value)) {
    throw new PngError("not a PNG file");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const texts = {};
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = latin1(bytes.subarray(offset + 4, offset + 8));
    const data = bytes.subarray(offset + 8, offset + 8 + length);
    if (data.length < length) throw new PngError(`the ${type} chunk is cut short`);
    if (type === "tEXt") Object.assign(texts, parseText(data));
    else if (type === "zTXt") Object.assign(texts, await parseCompressedText(data));
    else if (type === "iTXt") Object.assign(texts, await parseInternationalText(data));
    else if (type === "IEND") break;
    offset += 12 + length;
  }
  return texts;
}

function latin1(bytes) {
  return Array.from(bytes, (byte) => String.fromCharCode(byte)).join("");
}

function splitAtNull(bytes, start = 0) {
  const end = bytes.indexOf(0, start);
  if (end < 0) throw new PngError("a text chunk has no keyword terminator");
  return [bytes.subarray(start, end), end + 1];
}

function parseText(data) {
  const [keyword, rest] = splitAtNull(data);
  return { [latin1(keyword)]: latin1(data.subarray(rest)) };
}

async function parseCompressedText(data) {
  const [keyword, rest] = splitAtNull(data);
  const inflated = await inflate(data.subarray(rest + 1));
  return { [latin1(keyword)]: latin1(inflated) };
}

async function parseInternationalText(data) {
  const [keyword, afterKeyword] = splitAtNull(data);
  const compressed = data[afterKeyword] === 1;
  const [, afterLanguage] = splitAtNull(data, afterKeyword + 2);
  const [, afterTranslated] = splitAtNull(data, afterLanguage);
  const body = data.subarray(afterTranslated);
  const text = compressed ? await inflate(body) : body;
  return { [latin1(keyword)]: new TextDecoder("utf-8").decode(text) };
}

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The workflow a PNG carries: {workflow} (editor format) when present, else {prompt} (API format), else {}. */
export async function workflowFromPng(buffer) {
  const texts = await readPngText(buffer);
  const parse = (key) => {
    if (!(key in texts)) return null;
    try {
      return JSON.parse(texts[key]);
    } catch {
      return null;
    }
  };
  const workflow = parse("workflow");
  if (workflow) return { workflow };
  const prompt = parse("prompt");
  return prompt ? { prompt } : {};
}
