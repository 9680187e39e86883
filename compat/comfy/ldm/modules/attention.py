"""`comfy.ldm.modules.attention` for plugins: ComfyUI's attention function over torch's scaled_dot_product_attention,
which is what nodeflow's models use (packs such as IPAdapter call it on their own query, key and value)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_pytorch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None,
                      attn_precision: torch.dtype | None = None, skip_reshape: bool = False,
                      skip_output_reshape: bool = False, **kwargs) -> torch.Tensor:
    """Multi-head attention. q, k, v are [batch, tokens, heads * dim] (or [batch, heads, tokens, dim] with
    `skip_reshape`); the result is [batch, tokens, heads * dim] (or [batch, heads, tokens, dim] with
    `skip_output_reshape`). A 2-D or 3-D `mask` gets batch and head dimensions; it is added to the scores (a float
    mask) or selects the keys (a bool mask), as torch's SDPA reads it."""
    if skip_reshape:
        batch, _, _, dim_head = q.shape
    else:
        batch, _, width = q.shape
        dim_head = width // heads
        q, k, v = (t.view(batch, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        while mask.ndim < 4:
            mask = mask.unsqueeze(0 if mask.ndim == 2 else 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(batch, -1, heads * dim_head)


optimized_attention = attention_pytorch
optimized_attention_masked = attention_pytorch

__all__ = ["attention_pytorch", "optimized_attention", "optimized_attention_masked"]
