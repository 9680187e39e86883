"""The DALL-E 2 style unCLIP cascade as Kandinsky 2.2 runs it: a diffusion prior (prompt -> CLIP image embedding)
and a decoder UNet conditioned on image embeddings, with a MoVQ autoencoder. Parts: `detection` (its pipeline
folders), `loading` (prior, decoder, `MovqVae`), `text_encoding` (the prior and the CLIP image encoder),
`sampling` (`DecoderSampling`), `lora` (the decoder's LoRA keys), `demo` (tiny models). Its folders load with
UnCLIPPriorLoader and UnCLIPDecoderLoader, not as a MODEL/CLIP/VAE triple."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.families.unclip import lora, sampling
from diffusion.families.unclip.loading import FAMILY as NAME
from diffusion.registry import Family


def _make_demo_models(models_dir: Path) -> Any:
    from diffusion.families.unclip.demo import make_kandinsky_demo_models

    return make_kandinsky_demo_models(models_dir)


FAMILY = Family(name=NAME, title="unCLIP (Kandinsky 2.2)", sampling=sampling.DecoderSampling,
                make_demo_models=_make_demo_models, read_lora=lora.read_lora)
