"""`comfy.ldm` for plugins: only the attention functions packs call on their own tensors (`modules.attention`);
ComfyUI's model classes are not provided, nodeflow's models are diffusers'."""
