"""The model layer: every model family, the loading of their files, one sampling core, the memory manager.

- `registry` finds a file's family; `families/<family>/` holds each family's parts; `loading` holds the entry
  points the loader nodes call ("load an SDXL checkpoint": `loading.load_checkpoint` ->
  `families/sdxl/loading.load_checkpoint`).
- `contracts` are what every family implements (its sampling hooks, CLIP and VAE values); `components` the
  MODEL and VAE values all families share.
- `sampling/` is the one sampling loop (`sampling/loop.py`: one step is its loop body) and its tables.
- `manager` caches loaded models and keeps them within memory budgets (`memory`); `files` and `ldm` read files;
  `encoders/` are text-encoder parts; `lora` applies LoRAs while a model computes; `lazy_module`, `speedups` and
  `preload` serve memory, speed and start-up.

Knows nothing of node classes, the node environment, HTTP or the executor (it reports progress through
`engine.progress`).
"""
