"""T5 text encoders (FLUX's and SD3's second prompt encoder) read from files, and their tokenizers, offline.

A T5 encoder file in the transformers key layout (`shared.weight`, `encoder.block.N...`, as the published
`t5xxl_*.safetensors` files are) is rebuilt from its shapes. The tokenizer is chosen by the embedding's row
count, as for CLIP: the published encoders (32,128 embedding rows) use T5 v1.1's own tokenizer, shipped in `data/`
(see LICENSE-T5-TOKENIZER.txt for where it comes from); the tiny test models use the project's own Unigram
vocabulary (built here, deterministic, no sentencepiece model and no training). `T5Padding` holds ComfyUI's T5
tokenizer options (T5TokenizerOptions), which the families' CLIPs tokenize with instead of their pipelines' fixed
length when set. Knows nothing of nodes, the node environment or other families.
"""
from __future__ import annotations

import functools
import gzip
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import quantized
from diffusion.files import block_indices, empty_weights, load_strict

if TYPE_CHECKING:
    from transformers import T5EncoderModel

PAD, END, UNKNOWN = "<pad>", "</s>", "<unk>"  # ids 0, 1, 2, as in T5
WORD_START = "\u2581"  # sentencepiece's word-boundary marker
MAX_LENGTH = 512  # FluxPipeline's default max_sequence_length
TOKENIZER_FILE = Path(__file__).parent / "data" / "t5_tokenizer.json.gz"
# T5 v1.1's vocabulary has 32,100 tokens; its encoders' embeddings are padded to 32,128 rows.
T5_VOCAB_SIZES = (32_128, 32_100)


def _tiny_pieces() -> list[tuple[str, float]]:
    """Specials, the word marker, every letter at a word start, then single characters: each text tokenizes."""
    characters = string.ascii_letters + string.digits + string.punctuation
    pieces = [(PAD, 0.0), (END, 0.0), (UNKNOWN, 0.0), (WORD_START, -2.0)]
    pieces += [(WORD_START + letter, -3.0) for letter in string.ascii_letters]
    pieces += [(character, -4.0) for character in characters]
    return pieces


TINY_T5_VOCAB_SIZE = len(_tiny_pieces())


@functools.lru_cache(maxsize=2)
def tiny_t5_tokenizer() -> Any:
    """The project's small T5 tokenizer (Unigram over characters), for the tiny test models."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=_tiny_pieces(), extra_ids=0, model_max_length=MAX_LENGTH)


@dataclass(frozen=True)
class T5Padding:
    """ComfyUI's T5 tokenizer options: the text's tokens and the end token, never cut, then `min_padding` pad
    tokens, then pad tokens up to `min_length` tokens in all (ComfyUI's SDTokenizer with {t5}_min_padding and
    {t5}_min_length set)."""

    min_padding: int = 0
    min_length: int = 0

    def token_ids(self, tokenizer: Any, text: str) -> torch.Tensor:
        """[1, length] token ids of `text`."""
        ids = list(tokenizer(text, add_special_tokens=True, truncation=False, verbose=False).input_ids)
        ids += [tokenizer.pad_token_id] * self.min_padding
        ids += [tokenizer.pad_token_id] * max(0, self.min_length - len(ids))
        return torch.tensor([ids])


@functools.lru_cache(maxsize=1)
def t5_tokenizer() -> Any:
    """T5 v1.1's tokenizer (the T5-XXL encoders' of FLUX.1, SD3 and Chroma), from the file shipped in `data/`."""
    from tokenizers import Tokenizer
    from transformers import T5Tokenizer

    with gzip.open(TOKENIZER_FILE, "rt", encoding="utf-8") as file:
        backend = Tokenizer.from_str(file.read())
    return T5Tokenizer(tokenizer_object=backend, model_max_length=MAX_LENGTH)


def t5_tokenizer_for_vocab(vocab_size: int, input_name: str) -> Any:
    if vocab_size in T5_VOCAB_SIZES:
        return t5_tokenizer()
    if vocab_size == TINY_T5_VOCAB_SIZE:
        return tiny_t5_tokenizer()
    raise ValueError(
        f"{input_name}: a T5 encoder with {vocab_size} tokens is not T5 v1.1's (32,128 rows, as in FLUX.1's, SD3's "
        "and Chroma's t5xxl files), so its tokenizer is unknown; load the model from a diffusers folder (with its "
        "tokenizer) instead")


def is_t5_encoder(state: Mapping[str, torch.Tensor]) -> bool:
    return "encoder.block.0.layer.0.SelfAttention.q.weight" in _without_prefix(state)


def _without_prefix(state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    if any(key.startswith("encoder.") for key in state):
        return state
    return {key.split(".", 1)[1]: value for key, value in state.items() if "." in key}


def t5_vocab_size(state: Mapping[str, Any]) -> int:
    """The token count of a T5 encoder file, from its embedding's shape: its tensors, or `files.safetensors_shapes`
    of its header."""
    embedding = _without_prefix(state)["shared.weight"]
    return int((embedding.shape if isinstance(embedding, torch.Tensor) else embedding)[0])


def t5_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """T5Config arguments read from an encoder's tensor shapes (v1.1 gated-GELU or original ReLU feed-forward)."""
    attention = "encoder.block.0.layer.0.SelfAttention."
    bias = state[attention + "relative_attention_bias.weight"]
    heads = bias.shape[1]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in state
    feed_forward = state["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"]
    return dict(vocab_size=state["shared.weight"].shape[0], d_model=state["shared.weight"].shape[1],
                d_kv=state[attention + "q.weight"].shape[0] // heads, num_heads=heads,
                d_ff=feed_forward.shape[0], num_layers=len(block_indices(state, "encoder.block.")),
                relative_attention_num_buckets=bias.shape[0],
                feed_forward_proj="gated-gelu" if gated else "relu", is_encoder_decoder=False, use_cache=False)


def build_t5_encoder(state: Mapping[str, torch.Tensor], input_name: str) -> "T5EncoderModel":
    """A transformers T5EncoderModel from an encoder file's tensors; ValueError naming the input if they do not fit."""
    from transformers import T5Config, T5EncoderModel

    state = _without_prefix(state)
    try:
        config = T5Config(**t5_config(state))
    except KeyError as error:
        raise ValueError(f"{input_name}: T5 encoder tensors incomplete ({error})") from error
    with empty_weights():  # no random fp32 weights beside the file's (19 GB for T5-XXL)
        model = T5EncoderModel(config)
    # transformers' T5 casts the hidden states to its `wo` layers' weight dtype, which for weights kept in fp8 is
    # their bytes' uint8: those layers get the values (and the embedding once, as two names share it)
    weights = {key: quantized.dequantize(value)
               if key.endswith((".wo.weight", "shared.weight")) and quantized.is_quantized(value) else value
               for key, value in state.items()}
    weights.setdefault("encoder.embed_tokens.weight", weights["shared.weight"])
    try:
        load_strict(model, weights, "T5 encoder")
    except ValueError as error:
        raise ValueError(f"{input_name}: {error}") from error
    return model.eval()
