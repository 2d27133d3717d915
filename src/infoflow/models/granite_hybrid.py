"""Granite 4.0-H (IBM, ``model_type`` granitemoehybrid): Bamba's Mamba-2 and attention layers with Granite's
multipliers, and a mixture-of-experts MLP beside a shared MLP.

    h = embedding_multiplier * embed(ids)
    per layer l:  h = h + r * mixer_l(input_layernorm(h))
                  h = h + r * (moe(y) + shared(y)),   y = post_attention_layernorm(h)     (r: residual_multiplier)
    logits = lm_head(norm(h)) / logits_scaling

mixer_l (``config.layer_types[l]``) is Mamba-2's SSD or grouped-query attention with scaling
``attention_multiplier`` (instead of 1/sqrt(P)), with rotary embeddings only when ``position_embedding_type``
is "rope" (released checkpoints say "nope": no position encoding). The MoE routes each position to its top-k
router logits with a softmax over those k (:mod:`infoflow.models.moe`); ``shared(y) = down(act(g) * u)`` with
[g; u] = input_linear(y). Without experts (``num_local_experts`` 0) the MLP is the shared one alone.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import PretrainedConfig

from infoflow.models.bamba import ATTENTION_LAYER, layer_types, mamba2_mixer
from infoflow.models.base import Block, CausalLM, RMSNorm, TokenMixer
from infoflow.models.families import StateDict, renamer
from infoflow.models.llama import GatedMLP, LlamaAttention
from infoflow.models.moe import Experts, MoE, Router, Routing
from infoflow.models.rotary import Rotary


class Scale(nn.Module):
    """``x * factor`` (Granite's residual multiplier on each update, and 1 / logits_scaling before lm_head, which
    is linear without bias, so that lm_head(x / s) = lm_head(x) / s)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class ScaledEmbedding(nn.Embedding):
    """Token embeddings times ``embedding_multiplier``."""

    def __init__(self, vocab_size: int, d_model: int, multiplier: float) -> None:
        super().__init__(vocab_size, d_model)
        self.multiplier = multiplier

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids) * self.multiplier


def mlp(config: PretrainedConfig) -> nn.Module:
    """The MoE with its shared MLP, or the shared MLP alone without experts."""
    shared = GatedMLP(config.hidden_size, config.shared_intermediate_size, config.hidden_act, bias=False)
    if config.num_local_experts == 0:
        return shared
    router = Router(config.hidden_size, config.num_local_experts, config.num_experts_per_tok, Routing.TOPK_THEN_SOFTMAX)
    experts = Experts(
        config.num_local_experts, config.hidden_size, config.intermediate_size, config.hidden_act, gated=True
    )
    return MoE(router, experts, shared)


def build(config: PretrainedConfig) -> CausalLM:
    """A Granite 4.0-H model from a transformers ``GraniteMoeHybridConfig``."""
    if config.position_embedding_type not in (None, "nope", "rope"):
        raise ValueError(
            f"position_embedding_type {config.position_embedding_type!r} is not supported (rope, nope or None)"
        )
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rotary = Rotary(config, head_dim) if config.position_embedding_type == "rope" else None
    d_model, eps, residual = config.hidden_size, config.rms_norm_eps, config.residual_multiplier

    def mixer(layer: int, kind: str) -> TokenMixer:
        if kind == ATTENTION_LAYER:
            return LlamaAttention(config, layer, rotary, scaling=config.attention_multiplier)
        return mamba2_mixer(config)

    blocks = [
        Block(
            RMSNorm(d_model, eps),
            mixer(layer, kind),
            RMSNorm(d_model, eps),
            mlp(config),
            post_mixer_norm=Scale(residual),
            post_mlp_norm=Scale(residual),
        )
        for layer, kind in enumerate(layer_types(config))
    ]
    return CausalLM(
        family="granitemoehybrid",
        embed=ScaledEmbedding(config.vocab_size, d_model, config.embedding_multiplier),
        blocks=blocks,
        final_norm=nn.Sequential(RMSNorm(d_model, eps), Scale(1.0 / config.logits_scaling)),
        lm_head=nn.Linear(d_model, config.vocab_size, bias=False),
    )


rename = renamer(
    (
        (r"^model\.embed_tokens\.", "embed."),
        (r"^model\.layers\.(\d+)\.input_layernorm\.", r"blocks.\1.mixer_norm."),
        (r"^model\.layers\.(\d+)\.(mamba|self_attn)\.", r"blocks.\1.mixer."),
        (r"^model\.layers\.(\d+)\.post_attention_layernorm\.", r"blocks.\1.mlp_norm."),
        (r"^model\.layers\.(\d+)\.block_sparse_moe\.router\.layer\.", r"blocks.\1.mlp.router."),
        (r"^model\.layers\.(\d+)\.block_sparse_moe\.input_linear\.weight", r"blocks.\1.mlp.experts.up_proj"),
        (r"^model\.layers\.(\d+)\.block_sparse_moe\.output_linear\.weight", r"blocks.\1.mlp.experts.down_proj"),
        (r"^model\.norm\.", "final_norm.0."),
    )
)
SHARED_MLP = re.compile(r"^model\.layers\.(\d+)\.shared_mlp\.(input|output)_linear\.weight$")


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours; the shared MLP's fused ``input_linear`` [2S, D] splits into gate and up
    (``mlp.shared.*`` in layers with experts, ``mlp.*`` without)."""
    ours = rename({key: value for key, value in state_dict.items() if not SHARED_MLP.match(key)})
    for key, value in state_dict.items():
        if match := SHARED_MLP.match(key):
            layer, which = match.groups()
            prefix = (
                f"blocks.{layer}.mlp.shared." if f"blocks.{layer}.mlp.router.weight" in ours else f"blocks.{layer}.mlp."
            )
            if which == "input":
                ours[prefix + "gate_proj.weight"], ours[prefix + "up_proj.weight"] = value.chunk(2, dim=0)
            else:
                ours[prefix + "down_proj.weight"] = value
    return ours
