"""Model machinery behind the built-in nodes: tokenizers, model families, checkpoint conversion, the model
cache, LoRA application, prompt encoding, the sampler loop and the tiny-model generator. Knows nothing of node
classes, HTTP or the executor."""
