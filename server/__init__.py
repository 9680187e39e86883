"""The HTTP + websocket server: translates ComfyUI's API onto the engine. No node or diffusion logic here."""
