"""Llama, Qwen2 and Mistral (SmolLM2 is a Llama): RMSNorm, rotary positions, grouped-query attention, SwiGLU.

Per block ``x += o_proj(attn(input_layernorm(x)))``, ``x += down(act(gate(y)) * up(y))`` with
``y = post_attention_layernorm(x)``; logits ``= lm_head(norm(x))``. Attention (the shared
:class:`~infoflow.models.rotary.RotaryAttention`) reads RoPE-rotated queries and keys: with angles
``theta[t, i] = t inv_freq[i]`` (i < R/2, repeated for both halves) and ``rotate_half([a, b]) = [-b, a]``,

    q_rot[t] = m (q[t] cos(theta[t]) + rotate_half(q[t]) sin(theta[t]))      (same for k)

on the first R dims of each head (R = P unless ``partial_rotary_factor`` < 1), where ``inv_freq`` and the
attention factor ``m`` come from the config's ``rope_parameters`` (transformers' own rope utilities for scaled
variants). Mistral, and Qwen2 layers marked ``sliding_attention``, only attend
to the last ``sliding_window`` positions (the query included). Hybrids reuse this attention;
without a rotary (Jamba, Nemotron-H, Granite 4.0-H) queries and keys carry no position.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from infoflow.models.attention import AttentionInputs
from infoflow.models.base import Block, CausalLM, RMSNorm, TokenMixer
from infoflow.models.families import StateDict, renamer
from infoflow.models.rotary import Rotary, RotaryAttention


class LlamaAttention(RotaryAttention):
    def __init__(
        self,
        config: PretrainedConfig,
        layer: int,
        rotary: Rotary | None,
        scaling: float | None = None,
        softcap: float | None = None,
    ) -> None:
        n_heads, n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        scaling = head_dim**-0.5 if scaling is None else scaling
        super().__init__(n_heads, n_kv_heads, head_dim, scaling, sliding_window(config, layer), softcap)
        self.rotary = rotary
        qkv_bias = config.model_type == "qwen2" or getattr(config, "attention_bias", False)
        d_model = config.hidden_size
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=getattr(config, "attention_bias", False))

    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # [B, T, heads * P] -> [B, T, heads, P]
        q, k, v = (proj(hidden).unflatten(-1, (-1, self.head_dim)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        return (*self.norm_qk(q, k), v)

    def norm_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries [B, T, H, P] and keys [B, T, Hkv, P] before rotary: unchanged here (QK-norm families norm them)."""
        return q, k

    def project(self, mixed: torch.Tensor, p: AttentionInputs) -> torch.Tensor:
        return self.o_proj(mixed.flatten(2))  # [B, T, H, P] -> [B, T, D]


def sliding_window(config: PretrainedConfig, layer: int) -> int | None:
    """Mistral: every layer when ``sliding_window`` is set; Qwen2: the layers ``layer_types`` marks sliding."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and layer_types[layer] != "sliding_attention":
        return None
    return window


class GatedMLP(nn.Module):
    """SwiGLU: ``down(act(gate(x)) * up(x))``."""

    def __init__(self, d_model: int, d_inner: int, activation: str, bias: bool) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_inner, bias=bias)
        self.up_proj = nn.Linear(d_model, d_inner, bias=bias)
        self.down_proj = nn.Linear(d_inner, d_model, bias=bias)
        self.act = ACT2FN[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


def pre_norm_blocks(
    config: PretrainedConfig, mixer: Callable[[int, Rotary], TokenMixer], mlp: Callable[[], nn.Module]
) -> list[Block]:
    """Llama's layers ``h += mixer(norm(h)); h += mlp(norm(h))`` (RMSNorms), with ``mixer(layer, rotary)``
    (one rotary table shared by every layer) and ``mlp()`` the family's."""
    if config.hidden_act not in ACT2FN:
        raise ValueError(f"unknown hidden_act {config.hidden_act!r}")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rotary = Rotary(config, head_dim)
    d_model, eps = config.hidden_size, config.rms_norm_eps
    return [
        Block(RMSNorm(d_model, eps), mixer(layer, rotary), RMSNorm(d_model, eps), mlp())
        for layer in range(config.num_hidden_layers)
    ]


def build(
    config: PretrainedConfig,
    family: str = "llama",
    attention: Callable[[PretrainedConfig, int, Rotary], LlamaAttention] = LlamaAttention,
) -> CausalLM:
    """A Llama / Qwen2 / Mistral model from a transformers config (Qwen3: the same with its ``attention``)."""
    blocks = pre_norm_blocks(
        config,
        lambda layer, rotary: attention(config, layer, rotary),
        lambda: GatedMLP(
            config.hidden_size, config.intermediate_size, config.hidden_act, getattr(config, "mlp_bias", False)
        ),
    )
    return CausalLM(
        family=family,
        embed=nn.Embedding(config.vocab_size, config.hidden_size),
        blocks=blocks,
        final_norm=RMSNorm(config.hidden_size, config.rms_norm_eps),
        lm_head=nn.Linear(config.hidden_size, config.vocab_size, bias=False),
    )


rename = renamer(
    (
        (r"^model\.embed_tokens\.", "embed."),
        (r"^model\.layers\.(\d+)\.input_layernorm\.", r"blocks.\1.mixer_norm."),
        (r"^model\.layers\.(\d+)\.self_attn\.", r"blocks.\1.mixer."),
        (r"^model\.layers\.(\d+)\.post_attention_layernorm\.", r"blocks.\1.mlp_norm."),
        (r"^model\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
        (r"^model\.norm\.", "final_norm."),
    )
)


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours (older checkpoints also store ``rotary_emb.inv_freq`` buffers: dropped)."""
    return rename({k: v for k, v in state_dict.items() if not k.endswith("rotary_emb.inv_freq")})
