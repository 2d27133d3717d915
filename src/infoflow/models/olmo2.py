"""OLMo 2: post-norms and QK-norm over the whole projection, otherwise Llama (rotary, SwiGLU, GQA).

Per block there is no pre-norm; the norms follow the mixer and the MLP (weights applied in fp32):

    h = h + post_attention_norm(o_proj(attn(h))),   h = h + post_feedforward_norm(mlp(h))

and the queries and keys are RMS-normalised over all heads at once before rotary:
``q[t] <- w_q * q[t] / rms(q[t])`` with ``q[t]`` the [H P] projection (same for k, [Hkv P]).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig

from infoflow.models import llama
from infoflow.models.base import Block, CausalLM
from infoflow.models.families import StateDict, renamer
from infoflow.models.llama import GatedMLP
from infoflow.models.norms import Fp32RMSNorm
from infoflow.models.qk_norm import QKNormAttention
from infoflow.models.rotary import Rotary


def build(config: PretrainedConfig) -> CausalLM:
    """An OLMo 2 model from a transformers config."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rotary = Rotary(config, head_dim)
    d_model, eps = config.hidden_size, config.rms_norm_eps
    blocks = [
        Block(
            nn.Identity(),
            QKNormAttention(config, layer, rotary, norm=Fp32RMSNorm, per_head=False),
            nn.Identity(),
            GatedMLP(d_model, config.intermediate_size, config.hidden_act, bias=False),
            post_mixer_norm=Fp32RMSNorm(d_model, eps),
            post_mlp_norm=Fp32RMSNorm(d_model, eps),
        )
        for layer in range(config.num_hidden_layers)
    ]
    return CausalLM(
        family="olmo2",
        embed=nn.Embedding(config.vocab_size, d_model),
        blocks=blocks,
        final_norm=Fp32RMSNorm(d_model, eps),
        lm_head=nn.Linear(d_model, config.vocab_size, bias=False),
    )


# the post-norms first: Llama's rules would make post_attention_layernorm the MLP's pre-norm
rename_post_norms = renamer(
    (
        (r"^model\.layers\.(\d+)\.post_attention_layernorm\.", r"blocks.\1.post_mixer_norm."),
        (r"^model\.layers\.(\d+)\.post_feedforward_layernorm\.", r"blocks.\1.post_mlp_norm."),
    )
)


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours (Llama's, with the post-norms)."""
    return llama.convert_state_dict(rename_post_norms(state_dict))
