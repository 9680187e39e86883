"""The model families, one package each with the same parts: `detection` (which files are the family's),
`loading` (every file layout it has), `text_encoding` (its CLIP value), `sampling` (its `FamilySampling` hooks),
`lora` (how its LoRA files are keyed), `demo` (tiny random-weight models in its real file layouts, for tests and
the out-of-the-box demo; real-model code never imports them), and `__init__` with its `FAMILY` registry entry
(`diffusion.registry`). `ldm_export` writes diffusers modules in the original LDM key layout, for the demos
and for saving (`diffusion.saving`); `wan22_vae_layout` converts Wan 2.2 style VAEs (Qwen-Image 2.1's) between
ComfyUI's original layout and diffusers'."""
