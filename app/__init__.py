"""The program without HTTP: command-line settings, wiring engine + nodes into a runtime, headless runs, and
the persistent prompt queue with the worker that runs it. No node logic here.

Depends on `engine`, `nodes` and `diffusion` (demo models, memory accounting, preloading) only. It never imports
`server` or `distributed`, not even lazily: those build on it, and `serve.py` (next to `main.py`) composes them.
"""
