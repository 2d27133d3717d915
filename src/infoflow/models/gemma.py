"""Gemma 2 and Gemma 3 (text): Llama's attention and gated MLP with Gemma's norms, scales and caps.

Per block, norms before *and* after the mixer and the MLP, each ``(1 + w) x / rms(x)`` in fp32:

    h = h + post_attention_norm(o_proj(attn(input_norm(h))))
    h = h + post_feedforward_norm(mlp(pre_feedforward_norm(h)))

- The embedding is scaled by ``sqrt(D)`` (rounded to the weights' dtype, as transformers does).
- Attention logits are scaled by ``query_pre_attn_scalar ** -0.5`` (not ``P ** -0.5``).
- Gemma 2 soft-caps the attention logits, ``c tanh(logits / c)`` with ``c = attn_logit_softcapping``, before
  the causal mask (and before a knockout's -inf), and the final logits with ``final_logit_softcapping``.
- ``layer_types`` alternates ``sliding_attention`` (the last ``sliding_window`` positions only) and
  ``full_attention`` layers; Gemma 3 gives each type its own rotary base (``rope_parameters[layer_type]``)
  and normalises each query and key head (QK-norm, ``(1 + w)``) before rotary, instead of soft-capping.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from infoflow.models import llama
from infoflow.models.attention import soft_cap
from infoflow.models.base import Block, CausalLM
from infoflow.models.families import StateDict, renamer
from infoflow.models.llama import GatedMLP, LlamaAttention
from infoflow.models.norms import gemma_rms_norm
from infoflow.models.olmo2 import rename_post_norms
from infoflow.models.qk_norm import QKNormAttention
from infoflow.models.rotary import Rotary


class ScaledEmbedding(nn.Embedding):
    """Token embeddings times ``scale`` (in the weights' dtype): [B, T] -> [B, T, D]."""

    def __init__(self, vocab_size: int, d_model: int, scale: float) -> None:
        super().__init__(vocab_size, d_model)
        self.scale = scale

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embedded = super().forward(input_ids)
        return embedded * embedded.new_tensor(self.scale)


class SoftCappedLinear(nn.Linear):
    """``cap tanh(W x / cap)``: the LM head of a model whose final logits are soft-capped."""

    def __init__(self, d_in: int, d_out: int, cap: float) -> None:
        super().__init__(d_in, d_out, bias=False)
        self.cap = cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return soft_cap(super().forward(x), self.cap)


def is_gemma3(config: PretrainedConfig) -> bool:
    return config.model_type == "gemma3_text"


def attention(config: PretrainedConfig, layer: int, rotary: Rotary) -> LlamaAttention:
    options = dict(scaling=config.query_pre_attn_scalar**-0.5, softcap=config.attn_logit_softcapping)
    if is_gemma3(config):
        return QKNormAttention(config, layer, rotary, norm=gemma_rms_norm, per_head=True, **options)
    return LlamaAttention(config, layer, rotary, **options)


def build(config: PretrainedConfig) -> CausalLM:
    """A Gemma 2 or Gemma 3 text model from a transformers config."""
    if getattr(config, "use_bidirectional_attention", False):
        raise ValueError("bidirectional Gemma (an embedding model) is not a causal LM: use a causal checkpoint")
    if config.hidden_activation not in ACT2FN:
        raise ValueError(f"unknown hidden_activation {config.hidden_activation!r}")
    layer_types = config.layer_types
    # one rotary per layer type for Gemma 3 (bases differ), one for every layer of Gemma 2
    rotaries = {kind: Rotary(config, config.head_dim, kind if is_gemma3(config) else None) for kind in set(layer_types)}
    d_model, norm = config.hidden_size, partial(gemma_rms_norm, config.hidden_size, config.rms_norm_eps)
    blocks = [
        Block(
            norm(),
            attention(config, layer, rotaries[layer_types[layer]]),
            norm(),
            GatedMLP(d_model, config.intermediate_size, config.hidden_activation, bias=False),
            post_mixer_norm=norm(),
            post_mlp_norm=norm(),
        )
        for layer in range(config.num_hidden_layers)
    ]
    cap, vocab_size = config.final_logit_softcapping, config.vocab_size
    lm_head = nn.Linear(d_model, vocab_size, bias=False) if cap is None else SoftCappedLinear(d_model, vocab_size, cap)
    return CausalLM(
        family="gemma3" if is_gemma3(config) else "gemma2",
        embed=ScaledEmbedding(config.vocab_size, d_model, d_model**0.5),
        blocks=blocks,
        final_norm=norm(),
        lm_head=lm_head,
    )


# the post-norms as OLMo 2 names them; the pre-norm of the MLP has a name of its own
rename_pre_mlp_norm = renamer(((r"^model\.layers\.(\d+)\.pre_feedforward_layernorm\.", r"blocks.\1.mlp_norm."),))


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours (Llama's, with the pre- and post-norms)."""
    return llama.convert_state_dict(rename_pre_mlp_norm(rename_post_norms(state_dict)))
