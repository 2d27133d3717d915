"""Jamba (AI21): Mamba-1 layers with an attention layer every ``attn_layer_period``, and mixture-of-experts MLPs
every ``expert_layer_period`` layers.

Per layer l:  h = h + mixer_l(input_layernorm(h)),   h = h + mlp_l(pre_ff_layernorm(h))

mixer_l is attention (grouped-query, no position encoding) where l % attn_layer_period == attn_layer_offset,
else Mamba-1's selective scan (:mod:`infoflow.models.mamba1`) with dt, B and C RMS-normalised with learned
weights before dt_proj. mlp_l is an MoE (softmax over the router logits, then the top k, not renormalised:
:mod:`infoflow.models.moe`) where l % expert_layer_period == expert_layer_offset, else a SwiGLU MLP.
Logits = lm_head(final_layernorm(h)).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig

from infoflow.models import bamba
from infoflow.models.bamba import ATTENTION_LAYER, check_silu, layer_types
from infoflow.models.base import Block, CausalLM, RMSNorm, TokenMixer
from infoflow.models.families import StateDict
from infoflow.models.llama import GatedMLP, LlamaAttention
from infoflow.models.mamba1 import Mamba1Mixer
from infoflow.models.moe import Experts, MoE, Router, Routing, stack_experts


def mixer(config: PretrainedConfig, layer: int, kind: str) -> TokenMixer:
    if kind == ATTENTION_LAYER:
        return LlamaAttention(config, layer, rotary=None)
    check_silu(config.hidden_act, "hidden_act")
    return Mamba1Mixer(
        d_model=config.hidden_size,
        d_inner=config.mamba_expand * config.hidden_size,
        d_state=config.mamba_d_state,
        dt_rank=config.mamba_dt_rank,
        d_conv=config.mamba_d_conv,
        conv_bias=config.mamba_conv_bias,
        proj_bias=config.mamba_proj_bias,
        weighted_norm_eps=config.rms_norm_eps,
    )


def mlp(config: PretrainedConfig, n_experts: int) -> nn.Module:
    d_model, d_inner, activation = config.hidden_size, config.intermediate_size, config.hidden_act
    if n_experts == 1:
        return GatedMLP(d_model, d_inner, activation, bias=False)
    router = Router(d_model, n_experts, config.num_experts_per_tok, Routing.SOFTMAX_THEN_TOPK)
    return MoE(router, Experts(n_experts, d_model, d_inner, activation, gated=True))


def build(config: PretrainedConfig) -> CausalLM:
    """A Jamba model (``model_type`` jamba) from a transformers config."""
    d_model, eps = config.hidden_size, config.rms_norm_eps
    blocks = [
        Block(RMSNorm(d_model, eps), mixer(config, layer, kind), RMSNorm(d_model, eps), mlp(config, n_experts))
        for layer, (kind, n_experts) in enumerate(zip(layer_types(config), config.layers_num_experts, strict=True))
    ]
    return CausalLM(
        family="jamba",
        embed=nn.Embedding(config.vocab_size, d_model),
        blocks=blocks,
        final_norm=RMSNorm(d_model, eps),
        lm_head=nn.Linear(d_model, config.vocab_size, bias=False),
    )


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours (Jamba's are Bamba's); each MoE's per-expert gate, up and down weights stacked
    ([gate; up] fused)."""
    stacked = stack_experts(state_dict, {"up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)})
    return bamba.convert_state_dict(stacked)
