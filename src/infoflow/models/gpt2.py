"""GPT-2: ``x = wte[ids] + wpe[0..T-1]``; per block ``x += c_proj(attn(ln_1(x)))``, ``x += mlp(ln_2(x))``
with ``mlp = c_proj(act(c_fc(.)))``; logits ``= ln_f(x) @ wte^T``. Attention: see ``infoflow.models.attention``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from infoflow.models.attention import AttentionInputs, CausalSelfAttention
from infoflow.models.base import Block, CausalLM
from infoflow.models.families import StateDict, renamer


class GPT2Attention(CausalSelfAttention):
    def __init__(self, config: PretrainedConfig, layer: int) -> None:
        head_dim = config.hidden_size // config.num_attention_heads
        scaling = head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            scaling /= layer + 1
        super().__init__(config.num_attention_heads, config.num_attention_heads, head_dim, scaling, None)
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def prepare(self, hidden: torch.Tensor) -> AttentionInputs:
        # [B, T, 3D] -> q, k, v [B, T, H, P]
        q, k, v = (x.unflatten(-1, (-1, self.head_dim)) for x in self.c_attn(hidden).chunk(3, dim=-1))
        return AttentionInputs(q=q, k=k, v=v)

    def project(self, mixed: torch.Tensor, p: AttentionInputs) -> torch.Tensor:
        return self.c_proj(mixed.flatten(2))  # [B, T, H, P] -> [B, T, D]


class GPT2MLP(nn.Module):
    def __init__(self, d_model: int, d_inner: int, activation: str) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d_model, d_inner)
        self.act = ACT2FN[activation]
        self.c_proj = nn.Linear(d_inner, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Embedding(nn.Module):
    """Token plus learned absolute position embeddings (positions 0..T-1)."""

    def __init__(self, vocab_size: int, n_positions: int, d_model: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(n_positions, d_model)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.wte(input_ids) + self.wpe(positions)  # [B, T, D]


def check_config(config: PretrainedConfig) -> None:
    if config.add_cross_attention:
        raise ValueError("GPT-2 with cross-attention (add_cross_attention=True) is not supported")
    if config.activation_function not in ACT2FN:
        raise ValueError(f"unknown GPT-2 activation_function {config.activation_function!r}")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"n_embd={config.hidden_size} is not a multiple of n_head={config.num_attention_heads}")


def build(config: PretrainedConfig) -> CausalLM:
    """A GPT-2 model (``model_type`` gpt2) from a transformers config (``reorder_and_upcast_attn`` only
    changes precision: our knockout path computes attention in fp32 anyway)."""
    check_config(config)
    d_model, eps = config.hidden_size, config.layer_norm_epsilon
    d_inner = config.n_inner if config.n_inner is not None else 4 * d_model
    blocks = [
        Block(
            nn.LayerNorm(d_model, eps=eps),
            GPT2Attention(config, layer),
            nn.LayerNorm(d_model, eps=eps),
            GPT2MLP(d_model, d_inner, config.activation_function),
        )
        for layer in range(config.num_hidden_layers)
    ]
    return CausalLM(
        family="gpt2",
        embed=GPT2Embedding(config.vocab_size, config.n_positions, d_model),
        blocks=blocks,
        final_norm=nn.LayerNorm(d_model, eps=eps),
        lm_head=nn.Linear(d_model, config.vocab_size, bias=False),
        max_positions=config.n_positions,
        token_embedding_key="embed.wte.weight",
    )


rename = renamer(
    (
        (r"^transformer\.", ""),  # GPT2LMHeadModel prefixes GPT2Model's names
        (r"^wte\.", "embed.wte."),
        (r"^wpe\.", "embed.wpe."),
        (r"^h\.(\d+)\.ln_1\.", r"blocks.\1.mixer_norm."),
        (r"^h\.(\d+)\.attn\.", r"blocks.\1.mixer."),
        (r"^h\.(\d+)\.ln_2\.", r"blocks.\1.mlp_norm."),
        (r"^h\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
        (r"^ln_f\.", "final_norm."),
    )
)


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours; Conv1D weights [in, out] -> nn.Linear [out, in].

    Older checkpoints also store the causal-mask buffers ``attn.bias`` / ``attn.masked_bias``: dropped.
    """
    renamed = rename({k: v for k, v in state_dict.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))})
    weights = {
        k: v.T.contiguous() if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) else v
        for k, v in renamed.items()
    }
    return weights
