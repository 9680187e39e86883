"""The graph engine: node registry, workflow formats, validation, execution, caching, events.

Knows nothing of diffusion (that is `nodes/`) nor of HTTP (that is the server).
"""
