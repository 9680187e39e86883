"""The one sampling core of every family: the denoising loop (`loop.sample`), classifier-free guidance
(`guidance`), the scheduler tables (`schedulers` for discrete-time models, `flow` for flow matching), the two
bases of the families' `FamilySampling` hooks (`discrete.DiscreteSampling`, `flow.FlowSampling`), image editing's
extra inputs (`editing`) and latent previews (`preview`). Knows nothing of nodes or files."""
