/**
 * The colour of each data type, for sockets and wires: ComfyUI's palette for the core types, and a stable
 * colour from the name for any other type, so a plugin's types are told apart too. Pure.
 */
const COLORS = {
  MODEL: "#b39ddb",
  CLIP: "#ffd500",
  VAE: "#ff6e6e",
  CONDITIONING: "#ffa931",
  LATENT: "#ff9cf9",
  IMAGE: "#64b5f6",
  MASK: "#81c784",
  CONTROL_NET: "#00d78d",
  CLIP_VISION: "#a8dadc",
  CLIP_VISION_OUTPUT: "#ad7452",
  STYLE_MODEL: "#c2ffae",
  UPSCALE_MODEL: "#c2a0ff",
  INT: "#8ac4a0",
  FLOAT: "#a7c96b",
  STRING: "#c9a76b",
  BOOLEAN: "#8fa6c9",
  COMBO: "#c98fb2",
  "*": "#a0a0a0",
};

export function typeColor(type) {
  if (!type) return COLORS["*"];
  const first = String(type).split(",")[0].trim();
  if (COLORS[first]) return COLORS[first];
  let hash = 0;
  for (const char of first) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360}, 55%, 65%)`;
}
