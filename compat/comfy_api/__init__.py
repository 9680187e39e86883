"""`comfy_api` for plugins: ComfyUI's versioned plugin API. `latest` has the V3 node schema (`io`, `ui`,
`ComfyExtension`) and `ComfyAPI`; `v0_0_2` is the same API under its version name."""
