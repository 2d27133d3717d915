"""Nemotron-H (NVIDIA): every layer is one of a Mamba-2 mixer, an attention mixer, an MLP or an MoE.

``config.layer_types`` (``hybrid_override_pattern``: M, *, -, E) gives each layer's kind; a layer is

    h = h + f(norm(h)),   f = Mamba-2 SSD | attention | down(relu(up(y))^2) | MoE

Mamba-2 (:mod:`infoflow.models.mamba2`): Delta clamped below at ``time_step_min``, the gated norm over groups of
Di / n_groups channels. Attention: grouped-query, no position encoding (NoPE). MLP layers have no token mixer
(:class:`~infoflow.models.no_mixer.NoMixer`, kind ``none``): they keep their own layer index, and a knockout
there removes nothing. MoE layers: sigmoid scores, group-limited top-k with a correction bias, plus a shared
expert (:mod:`infoflow.models.moe`). Logits = lm_head(norm_f(h)).
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from infoflow.models.bamba import ATTENTION_LAYER, SSM_LAYER, check_silu, layer_types
from infoflow.models.base import Block, CausalLM, RMSNorm
from infoflow.models.families import StateDict, renamer
from infoflow.models.llama import LlamaAttention
from infoflow.models.mamba2 import Mamba2Mixer
from infoflow.models.moe import Experts, MoE, Router, Routing, stack_experts
from infoflow.models.no_mixer import NoMixer

MLP_LAYER, MOE_LAYER = "mlp", "moe"


class PlainMLP(nn.Module):
    """``down(act(up(x)))`` (Nemotron-H: act = relu2, the squared ReLU)."""

    def __init__(self, d_model: int, d_inner: int, activation: str, bias: bool) -> None:
        super().__init__()
        self.up_proj = nn.Linear(d_model, d_inner, bias=bias)
        self.down_proj = nn.Linear(d_inner, d_model, bias=bias)
        self.act = ACT2FN[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


def mamba2_mixer(config: PretrainedConfig) -> Mamba2Mixer:
    check_silu(config.mamba_hidden_act, "mamba_hidden_act")
    d_inner = config.mamba_num_heads * config.mamba_head_dim
    return Mamba2Mixer(
        d_model=config.hidden_size,
        n_heads=config.mamba_num_heads,
        head_dim=config.mamba_head_dim,
        d_state=config.ssm_state_size,
        n_groups=config.n_groups,
        d_conv=config.conv_kernel,
        conv_bias=config.use_conv_bias,
        proj_bias=config.use_bias,
        norm_eps=config.layer_norm_epsilon,
        norm_group_size=d_inner // config.n_groups,
        time_step_limit=(float(config.time_step_min), float("inf")),
        chunk_size=config.chunk_size,
    )


def moe(config: PretrainedConfig) -> MoE:
    if config.moe_latent_size is not None:
        raise ValueError("Nemotron-H MoE layers with a latent projection (moe_latent_size) are not supported")
    d_model, activation = config.hidden_size, config.mlp_hidden_act
    router = Router(
        d_model,
        config.n_routed_experts,
        config.num_experts_per_tok,
        Routing.SIGMOID_GROUPS,
        renormalize=config.norm_topk_prob,
        scale=config.routed_scaling_factor,
        n_groups=config.n_group,
        top_groups=config.topk_group,
    )
    experts = Experts(config.n_routed_experts, d_model, config.moe_intermediate_size, activation, gated=False)
    shared = PlainMLP(d_model, config.moe_shared_expert_intermediate_size, activation, config.mlp_bias)
    return MoE(router, experts, shared)


def block(config: PretrainedConfig, layer: int, kind: str) -> Block:
    d_model, eps = config.hidden_size, config.layer_norm_epsilon
    if kind == SSM_LAYER:
        return Block(RMSNorm(d_model, eps), mamba2_mixer(config))
    if kind == ATTENTION_LAYER:
        return Block(RMSNorm(d_model, eps), LlamaAttention(config, layer, rotary=None))
    mlp = (
        moe(config)
        if kind == MOE_LAYER
        else PlainMLP(d_model, config.intermediate_size, config.mlp_hidden_act, config.mlp_bias)
    )
    return Block(nn.Identity(), NoMixer(d_model), RMSNorm(d_model, eps), mlp)


def build(config: PretrainedConfig) -> CausalLM:
    """A Nemotron-H model (``model_type`` nemotron_h) from a transformers config."""
    kinds = layer_types(config, (SSM_LAYER, ATTENTION_LAYER, MLP_LAYER, MOE_LAYER))
    return CausalLM(
        family="nemotron_h",
        embed=nn.Embedding(config.vocab_size, config.hidden_size),
        blocks=[block(config, layer, kind) for layer, kind in enumerate(kinds)],
        final_norm=RMSNorm(config.hidden_size, config.layer_norm_epsilon),
        lm_head=nn.Linear(config.hidden_size, config.vocab_size, bias=False),
    )


rename = renamer(
    (
        (r"^(backbone|model)\.embeddings\.", "embed."),
        (r"^(backbone|model)\.layers\.(\d+)\.norm\.", r"blocks.\2.mixer_norm."),
        (r"^(backbone|model)\.layers\.(\d+)\.mixer\.", r"blocks.\2.mixer."),
        (r"^(backbone|model)\.norm_f\.", "final_norm."),
        (r"\.mixer\.gate\.e_score_correction_bias$", ".mixer.router.correction_bias"),
        (r"\.mixer\.gate\.weight$", ".mixer.router.weight"),
        (r"\.mixer\.shared_experts\.", ".mixer.shared."),
    )
)
MLP_WEIGHT = re.compile(r"^blocks\.(\d+)\.mixer\.(up_proj|down_proj|router|experts|shared)\.")


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours (per-expert weights stacked); in MLP and MoE layers the layer's norm and
    weights are the block's MLP norm and MLP."""
    ours = rename(stack_experts(state_dict, {"up_proj": ("up_proj",), "down_proj": ("down_proj",)}))
    mlp_layers = {match[1] for key in ours if (match := MLP_WEIGHT.match(key))}
    for layer in mlp_layers:
        for key in [key for key in ours if key.startswith(f"blocks.{layer}.")]:
            new_key = key.replace(".mixer_norm.", ".mlp_norm.").replace(".mixer.", ".mlp.")
            ours[new_key] = ours.pop(key)
    return ours
