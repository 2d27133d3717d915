"""GPT-J: attention and MLP in parallel on one LayerNorm, interleaved rotary positions on ``rotary_dim`` dims.

Per block, attention and MLP both read ``y = ln_1(x)``:

    x = x + out_proj(attn(y)) + fc_out(act(fc_in(y)))

logits ``= lm_head(ln_f(x))`` (with a bias). The first ``rotary_dim`` dims of each query and key head are
rotated in adjacent pairs (2i, 2i + 1) with ``inv_freq[i] = 10000^(-2i / rotary_dim)`` (interleaved layout, see
``infoflow.models.rotary``); the rest carry no position. Attention is the shared causal softmax attention: a
knockout sets the logit of each blocked edge to -inf.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from infoflow.models.attention import AttentionInputs
from infoflow.models.base import Block, CausalLM
from infoflow.models.families import StateDict, renamer
from infoflow.models.gpt2 import GPT2MLP
from infoflow.models.rotary import RotaryAttention, RotaryEmbedding, default_inv_freq

ROPE_THETA = 10000.0  # fixed in GPT-J


class GPTJAttention(RotaryAttention):
    def __init__(self, config: PretrainedConfig, rotary: RotaryEmbedding) -> None:
        n_heads, d_model = config.n_head, config.n_embd
        head_dim = d_model // n_heads
        super().__init__(n_heads, n_heads, head_dim, head_dim**-0.5, None)
        self.rotary = rotary
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # [B, T, D] -> [B, T, H, P]
        q, k, v = (proj(hidden).unflatten(-1, (-1, self.head_dim)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        return q, k, v

    def project(self, mixed: torch.Tensor, p: AttentionInputs) -> torch.Tensor:
        return self.out_proj(mixed.flatten(2))  # [B, T, H, P] -> [B, T, D]


def check_config(config: PretrainedConfig) -> None:
    if config.activation_function not in ACT2FN:
        raise ValueError(f"unknown GPT-J activation_function {config.activation_function!r}")
    if config.n_embd % config.n_head:
        raise ValueError(f"n_embd={config.n_embd} is not a multiple of n_head={config.n_head}")
    head_dim = config.n_embd // config.n_head
    if config.rotary_dim is not None and (config.rotary_dim > head_dim or config.rotary_dim % 2):
        raise ValueError(f"rotary_dim={config.rotary_dim} must be even and at most the head size {head_dim}")


def build(config: PretrainedConfig) -> CausalLM:
    """A GPT-J model (``model_type`` gptj) from a transformers config."""
    check_config(config)
    d_model, eps = config.n_embd, config.layer_norm_epsilon
    rotary_dim = config.rotary_dim or d_model // config.n_head
    rotary = RotaryEmbedding(default_inv_freq(ROPE_THETA, rotary_dim), interleaved=True)  # shared by every layer
    d_inner = config.n_inner if config.n_inner is not None else 4 * d_model
    blocks = [
        Block(
            nn.LayerNorm(d_model, eps=eps),
            GPTJAttention(config, rotary),
            mlp=GPT2MLP(d_model, d_inner, config.activation_function),  # reads the same ln_1(x)
            parallel=True,
        )
        for _ in range(config.n_layer)
    ]
    return CausalLM(
        family="gptj",
        embed=nn.Embedding(config.vocab_size, d_model),
        blocks=blocks,
        final_norm=nn.LayerNorm(d_model, eps=eps),
        lm_head=nn.Linear(d_model, config.vocab_size),
        max_positions=config.n_positions,
    )


rename = renamer(
    (
        (r"^transformer\.wte\.", "embed."),
        (r"^transformer\.h\.(\d+)\.ln_1\.", r"blocks.\1.mixer_norm."),
        (r"^transformer\.h\.(\d+)\.attn\.", r"blocks.\1.mixer."),
        (r"^transformer\.h\.(\d+)\.mlp\.fc_in\.", r"blocks.\1.mlp.c_fc."),
        (r"^transformer\.h\.(\d+)\.mlp\.fc_out\.", r"blocks.\1.mlp.c_proj."),
        (r"^transformer\.ln_f\.", "final_norm."),
    )
)


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours (the causal-mask buffers ``attn.bias`` / ``attn.masked_bias`` of older
    checkpoints dropped)."""
    return rename({k: v for k, v in state_dict.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))})
