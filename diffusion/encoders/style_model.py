"""Style models: image tokens appended to a prompt's (ComfyUI's StyleModelLoader/StyleModelApply). FLUX.1 Redux
(`flux1-redux-dev.safetensors`: SigLIP's last hidden state through two linear layers into FLUX's T5 width) and the
T2I-Adapter style model for SD1 (`t2iadapter_style`: CLIP ViT-L's last hidden state and learned style queries
through a small transformer, whose query outputs are projected into SD1's text width). Knows nothing of nodes or
the node environment.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from diffusion.contracts import Place
from diffusion.files import block_indices, empty_weights, load_strict, read_safetensors

STYLE_ADAPTER_HEADS = 8


class ReduxProjection(torch.nn.Module):
    """FLUX.1 Redux: SigLIP image tokens [B, tokens, 1152] -> text-like tokens [B, tokens, 4096]."""

    def __init__(self, image_width: int, text_width: int) -> None:
        super().__init__()
        self.redux_up = torch.nn.Linear(image_width, text_width * 3)
        self.redux_down = torch.nn.Linear(text_width * 3, text_width)

    @property
    def image_width(self) -> int:
        return self.redux_up.in_features

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.redux_down(torch.nn.functional.silu(self.redux_up(image_tokens)))


class _ResidualAttention(torch.nn.Module):
    """A pre-norm transformer layer as OpenAI's CLIP has it (quick GELU), with its parameter names."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = torch.nn.LayerNorm(width)
        self.mlp = torch.nn.ModuleDict({"c_fc": torch.nn.Linear(width, width * 4),
                                        "c_proj": torch.nn.Linear(width * 4, width)})
        self.ln_2 = torch.nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.ln_1(x)
        x = x + self.attn(normed, normed, normed, need_weights=False)[0]
        hidden = self.mlp["c_fc"](self.ln_2(x))
        return x + self.mlp["c_proj"](hidden * torch.sigmoid(1.702 * hidden))


class StyleAdapter(torch.nn.Module):
    """The T2I-Adapter style model: CLIP image tokens [B, tokens, width] and its learned style queries through
    `layers` transformer layers; the queries' outputs, normalised and projected: [B, queries, text width]."""

    def __init__(self, width: int, text_width: int, layers: int, queries: int) -> None:
        super().__init__()
        self.transformer_layes = torch.nn.Sequential(*[_ResidualAttention(width, STYLE_ADAPTER_HEADS)
                                                       for _ in range(layers)])
        self.style_embedding = torch.nn.Parameter(torch.zeros(1, queries, width))
        self.ln_post = torch.nn.LayerNorm(width)
        self.ln_pre = torch.nn.LayerNorm(width)
        self.proj = torch.nn.Parameter(torch.zeros(width, text_width))

    @property
    def image_width(self) -> int:
        return self.style_embedding.shape[-1]

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        queries = self.style_embedding.expand(image_tokens.shape[0], -1, -1)
        x = self.transformer_layes(self.ln_pre(torch.cat([image_tokens, queries], dim=1)))
        return self.ln_post(x[:, -queries.shape[1]:]) @ self.proj


@dataclass(frozen=True, eq=False)
class StyleModel:
    """STYLE_MODEL: turns a CLIP_VISION_OUTPUT's last hidden state into conditioning tokens."""

    model: ReduxProjection | StyleAdapter
    name: str

    @torch.inference_mode()
    def tokens(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """[B, tokens, image width] -> float32 CPU tokens [B, tokens, text width]."""
        parameter = next(self.model.parameters())
        image_width = self.model.image_width
        if last_hidden_state.shape[-1] != image_width:
            encoder = "SigLIP's" if isinstance(self.model, ReduxProjection) else "CLIP ViT-L's"
            raise ValueError(f"clip_vision_output: {self.name} takes image tokens {image_width} wide ({encoder}), "
                             f"got {last_hidden_state.shape[-1]}")
        return self.model(last_hidden_state.to(parameter.device, parameter.dtype)).float().cpu()


def load_style_model(path: Path, place: Place, input_name: str) -> StyleModel:
    weights = read_safetensors(path, input_name)
    if "style_embedding" in weights and "proj" in weights:
        style = weights["style_embedding"]
        with empty_weights():
            model: torch.nn.Module = StyleAdapter(style.shape[-1], weights["proj"].shape[-1],
                                                  len(block_indices(weights, "transformer_layes.")), style.shape[1])
    elif "redux_down.weight" in weights and "redux_up.weight" in weights:
        with empty_weights():
            model = ReduxProjection(weights["redux_up.weight"].shape[1], weights["redux_down.weight"].shape[0])
    else:
        raise ValueError(f"{input_name}: {path.name} is not a style model (neither FLUX.1 Redux's redux_up/redux_down "
                         "nor a T2I-Adapter style_embedding)")
    load_strict(model, weights, f"{input_name}: {path.name}")
    return StyleModel(place(model).eval(), path.name)
