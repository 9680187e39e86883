"""`comfy_extras` for plugins: the modules of ComfyUI's extra nodes that packs import, each giving our nodes of
the same names (and the helper functions ComfyUI defines there)."""
