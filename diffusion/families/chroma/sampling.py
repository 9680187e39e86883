"""How the shared sampling loop drives a Chroma transformer: FLUX's (`FluxSampling`: packed latents, FLUX's
schedule and time shift, reference latents), without pooled text or distilled guidance, with classifier-free
guidance by cfg and the text's attention mask where a conditioning carries one (ComfyUI's "attention_mask" option;
Chroma's own CLIP, like ComfyUI's, gives none: every text token is seen). The mask is handed over as ChromaPipeline
hands it: a float mask (1 for the tokens attended, 0 for the others, the image all 1), which the transformer's
attention adds to its scores, so masked tokens are weighted down rather than left out; that is what the parity
with ChromaPipeline holds to. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from diffusion.contracts import GuidanceBatch
from diffusion.families.chroma.text_encoding import ATTENTION_MASK
from diffusion.families.flux.sampling import FluxSampling
from diffusion.sampling import reference_latents


class ChromaSampling(FluxSampling):
    """The shared sampling loop's hooks for a ChromaTransformer2DModel."""

    family_title = "Chroma"

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        """Each row's text attention mask (all tokens for a conditioning without one, e.g. a pack's)."""
        masks = []
        for group in guidance.groups:
            tokens = group.embeddings.shape[1]
            entries = guidance.options[group.start // batch:group.stop // batch]
            for options in entries:
                mask = options.get(ATTENTION_MASK)
                mask = torch.ones(1, tokens) if mask is None else mask.float()
                if mask.shape[-1] != tokens:
                    raise ValueError(f"conditioning: an attention mask of {mask.shape[-1]} tokens for text of "
                                     f"{tokens}; encode the prompt with Chroma's CLIP (CLIPLoader type chroma)")
                masks.append(mask.reshape(1, tokens).expand(batch, -1))
        same_width = len({mask.shape[1] for mask in masks}) == 1  # else each call's rows share theirs
        inputs: dict[str, Any] = {"text_mask": torch.cat(masks).to(device) if same_width
                                  else reference_latents.PerRow(row for mask in masks for row in mask)}
        references = reference_latents.rows(guidance.options, batch, self.latent_format, device, dtype)
        if references is not None:
            inputs[reference_latents.REFERENCES] = references
        return inputs

    def call_transformer(self, network: Any, tokens: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor,
                         text_ids: torch.Tensor, ids: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        text_mask = inputs["text_mask"]
        if isinstance(text_mask, reference_latents.PerRow):
            text_mask = torch.stack(list(text_mask))
        rows = tokens.shape[0]
        image = torch.ones(rows, tokens.shape[1], device=tokens.device)
        # float, as ChromaPipeline's (see the module's note)
        mask = torch.cat([text_mask.reshape(rows, -1).to(tokens.device), image], dim=1).to(tokens.dtype)
        return network(hidden_states=tokens, timestep=timestep, encoder_hidden_states=embeddings, txt_ids=text_ids,
                       img_ids=ids, attention_mask=mask, return_dict=False)[0]


CHROMA_SAMPLING = ChromaSampling()
