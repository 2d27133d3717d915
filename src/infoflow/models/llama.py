"""Llama, Qwen2 and Mistral (SmolLM2 is a Llama): RMSNorm, rotary positions, grouped-query attention, SwiGLU.

Per block ``x += o_proj(attn(input_layernorm(x)))``, ``x += down(act(gate(y)) * up(y))`` with
``y = post_attention_layernorm(x)``; logits ``= lm_head(norm(x))``. Attention (the shared
:class:`~infoflow.models.gpt2.CausalSelfAttention`) reads RoPE-rotated queries and keys: with angles
``theta[t, i] = t inv_freq[i]`` (i < P/2, repeated for both halves) and ``rotate_half([a, b]) = [-b, a]``,

    q_rot[t] = m (q[t] cos(theta[t]) + rotate_half(q[t]) sin(theta[t]))      (same for k)

where ``inv_freq`` and the attention factor ``m`` come from the config's ``rope_parameters`` (transformers'
own rope utilities for scaled variants). Mistral, and Qwen2 layers marked ``sliding_attention``, only attend
to the last ``sliding_window`` positions (the query included).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from infoflow.models.attention import AttentionInputs, CausalSelfAttention
from infoflow.models.base import Block, CausalLM, RMSNorm, TokenMixer
from infoflow.models.families import StateDict, renamer
from infoflow.models.tails import TailRows

# rope types whose frequencies depend on the run-time sequence length (transformers updates them statefully)
LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


class Rotary:
    """RoPE frequencies from the config; a plain object, not a module (models are built on the meta device
    and hold no buffers): ``inv_freq`` is computed on the CPU and moved to the input's device when used."""

    def __init__(self, config: PretrainedConfig, head_dim: int) -> None:
        params = config.rope_parameters
        rope_type = params.get("rope_type", "default")
        if rope_type in LENGTH_DEPENDENT_ROPE or (rope_type != "default" and rope_type not in ROPE_INIT_FUNCTIONS):
            raise ValueError(f"rope_type {rope_type!r} is not supported (use default or a static scaled type)")
        with torch.device("cpu"):  # build() runs under the meta device
            if rope_type == "default":
                # inv_freq[i] = theta^(-2i / P)
                inv_freq = 1.0 / (params["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
                attention_factor = 1.0
            else:
                inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"))
        if inv_freq.numel() != head_dim // 2:
            raise ValueError(f"partial rotary embeddings are not supported ({inv_freq.numel()} of {head_dim // 2})")
        self.inv_freq = inv_freq.float()  # [P/2]
        self.attention_factor = float(attention_factor)

    def cos_sin(self, start: int, stop: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """m cos(theta), m sin(theta) [T, P] for positions start..stop-1 (fp32 math, in ``like``'s dtype)."""
        if self.inv_freq.device != like.device:
            self.inv_freq = self.inv_freq.to(like.device)
        positions = torch.arange(start, stop, device=like.device, dtype=torch.float)
        theta = positions[:, None] * self.inv_freq[None, :]  # [T, P/2]
        theta = torch.cat((theta, theta), dim=-1)  # [T, P]
        cos, sin = theta.cos() * self.attention_factor, theta.sin() * self.attention_factor
        return cos.to(like.dtype), sin.to(like.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, P] -> x cos + rotate_half(x) sin, rotate_half([a, b]) = [-b, a]."""
    a, b = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-b, a), dim=-1) * sin


class RotaryAttention(CausalSelfAttention):
    """Attention whose queries and keys are rotated by their absolute positions (not at all where ``rotary`` is
    None); subclasses compute the heads before rotation (``projections``)."""

    rotary: Rotary | None

    @abstractmethod
    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [B, T, H, P], k and v [B, T, Hkv, P] of the normed inputs ``hidden`` [B, T, D], before rotation."""

    def prepare(self, hidden: torch.Tensor) -> AttentionInputs:
        return self.heads(hidden, start=0)

    def prepare_tail(
        self, hidden_tail: torch.Tensor, prefix: AttentionInputs, start: int, rows: TailRows
    ) -> AttentionInputs:
        return self.heads(hidden_tail, start)

    def heads(self, hidden: torch.Tensor, start: int) -> AttentionInputs:
        """Rotated heads of the normed inputs ``hidden`` [B, T, D] at positions start..start+T-1."""
        q, k, v = self.projections(hidden)
        if self.rotary is None:
            return AttentionInputs(q=q, k=k, v=v)
        cos, sin = (x[:, None] for x in self.rotary.cos_sin(start, start + hidden.shape[1], hidden))  # [T, 1, P]
        return AttentionInputs(q=rotate(q, cos, sin), k=rotate(k, cos, sin), v=v)


class LlamaAttention(RotaryAttention):
    def __init__(self, config: PretrainedConfig, layer: int, rotary: Rotary) -> None:
        n_heads, n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        super().__init__(n_heads, n_kv_heads, head_dim, head_dim**-0.5, sliding_window(config, layer))
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
        return q, k, v

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


def build(config: PretrainedConfig) -> CausalLM:
    """A Llama / Qwen2 / Mistral model from a transformers config."""
    blocks = pre_norm_blocks(
        config,
        lambda layer, rotary: LlamaAttention(config, layer, rotary),
        lambda: GatedMLP(
            config.hidden_size, config.intermediate_size, config.hidden_act, getattr(config, "mlp_bias", False)
        ),
    )
    return CausalLM(
        family="llama",
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
