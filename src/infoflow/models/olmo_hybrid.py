"""OLMo-Hybrid: Gated DeltaNet layers (``linear_attention``) and OLMo-3 attention layers (``full_attention``).

The delta-net layers are Qwen3-Next's (see :mod:`infoflow.models.qwen3_next` and ``delta_rule``) with
separate q, k, v, a, b and output-gate projections and, with ``linear_allow_neg_eigval``, a write strength
beta = 2 sigmoid(b) in (0, 2), so a step's transition ``I - beta k k^T`` may have a negative eigenvalue; the
hidden attention ``A = W (I + L)^{-1} diag(beta)`` stays exact (I + L is still unit lower triangular) and
the knockout modes read as for Qwen3-Next. They are pre-norm blocks. Attention layers are post-norm
(``h + norm(attn(h))``, ``h + norm(mlp(h))``), with RMSNorms over all heads' q and k, and no rotary in the
released checkpoints (``rope_parameters`` without ``rope_theta``).
"""

from __future__ import annotations

import re
from functools import partial

import torch
from torch import nn
from transformers import PretrainedConfig

from infoflow.models.base import Block, CausalLM, RMSNorm, TokenMixer
from infoflow.models.families import StateDict, renamer
from infoflow.models.llama import GatedMLP
from infoflow.models.qwen3_next import GatedDeltaNet, HybridAttention
from infoflow.models.rotary import Rotary

OUTPUT_NORM_EPS = 1e-5  # transformers' fixed eps of the delta-net output norm


class OlmoGatedDeltaNet(GatedDeltaNet):
    """OLMo-Hybrid's projections: q, k, v, a, b and the output gate each from their own."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config, OUTPUT_NORM_EPS, beta_scale=2.0 if config.linear_allow_neg_eigval else 1.0)
        heads, d_model, key_width = self.n_features, config.hidden_size, self.n_key_heads * self.key_dim
        self.q_proj = nn.Linear(d_model, key_width, bias=False)
        self.k_proj = nn.Linear(d_model, key_width, bias=False)
        self.v_proj = nn.Linear(d_model, heads * self.value_dim, bias=False)
        self.a_proj = nn.Linear(d_model, heads, bias=False)
        self.b_proj = nn.Linear(d_model, heads, bias=False)
        self.g_proj = nn.Linear(d_model, heads * self.value_dim, bias=False)

    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        qkv_raw = torch.cat([self.q_proj(hidden), self.k_proj(hidden), self.v_proj(hidden)], dim=-1)
        z = self.g_proj(hidden).unflatten(-1, (self.n_features, self.value_dim))
        return qkv_raw, z, self.b_proj(hidden), self.a_proj(hidden)


def rotary(config: PretrainedConfig) -> Rotary | None:
    params = getattr(config, "rope_parameters", None)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return None if params is None or params.get("rope_theta") is None else Rotary(config, head_dim)


def block(config: PretrainedConfig, layer: int, positions: Rotary | None) -> Block:
    d_model, eps = config.hidden_size, config.rms_norm_eps
    mlp = GatedMLP(d_model, config.intermediate_size, config.hidden_act, False)
    kind = config.layer_types[layer]
    if kind == "linear_attention":
        return Block(RMSNorm(d_model, eps), OlmoGatedDeltaNet(config), RMSNorm(d_model, eps), mlp)
    if kind == "full_attention":
        norm = partial(RMSNorm, eps=eps)
        attention: TokenMixer = HybridAttention(
            config, positions, norm, output_gate=False, bias=config.attention_bias, norm_over_heads=True
        )
        return Block(
            nn.Identity(),
            attention,
            nn.Identity(),
            mlp,
            post_mixer_norm=RMSNorm(d_model, eps),
            post_mlp_norm=RMSNorm(d_model, eps),
        )
    raise ValueError(f"layer {layer} has layer type {kind!r}; expected linear_attention or full_attention")


def build(config: PretrainedConfig) -> CausalLM:
    """An OLMo-Hybrid model from a transformers ``OlmoHybridConfig``."""
    positions = rotary(config)
    d_model = config.hidden_size
    return CausalLM(
        family="olmo_hybrid",
        embed=nn.Embedding(config.vocab_size, d_model),
        blocks=[block(config, layer, positions) for layer in range(config.num_hidden_layers)],
        final_norm=RMSNorm(d_model, config.rms_norm_eps),
        lm_head=nn.Linear(d_model, config.vocab_size, bias=False),
    )


rename = renamer(
    (
        (r"^model\.embed_tokens\.", "embed."),
        (r"^model\.layers\.(\d+)\.linear_attn\.o_proj\.", r"blocks.\1.mixer.out_proj."),
        (r"^model\.layers\.(\d+)\.linear_attn\.o_norm\.", r"blocks.\1.mixer.norm."),
        (r"^model\.layers\.(\d+)\.(self_attn|linear_attn)\.", r"blocks.\1.mixer."),
        (r"^model\.layers\.(\d+)\.input_layernorm\.", r"blocks.\1.mixer_norm."),
        (r"^model\.layers\.(\d+)\.post_feedforward_layernorm\.", r"blocks.\1.post_mlp_norm."),
        (r"^model\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
        (r"^model\.norm\.", "final_norm."),
    )
)


# the released checkpoints' names -> transformers' (transformers' conversion mapping for olmo_hybrid)
checkpoint_names = renamer(
    ((r"\.attention_layer_norm\.", ".input_layernorm."), (r"\.feedforward_layer_norm\.", ".post_attention_layernorm."))
)
CONV = re.compile(r"^(.*\.linear_attn\.)([qkv])_conv1d\.weight$")


def join_convs(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Checkpoints store the short conv of q, k and v as three weights: concatenated (q, k, v) into one."""
    joined: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        match = CONV.match(key)
        if match is None:
            joined[key] = value
        else:
            parts.setdefault(match.group(1), {})[match.group(2)] = value
    for prefix, convs in parts.items():
        joined[f"{prefix}conv1d.weight"] = torch.cat([convs["q"], convs["k"], convs["v"]])
    return joined


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Checkpoint or transformers names -> ours. ``post_attention_layernorm`` is the MLP's pre-norm in a
    delta-net layer and the attention's post-norm in an attention layer."""
    state_dict = join_convs(checkpoint_names(state_dict))
    attention_layers = {m.group(1) for key in state_dict if (m := re.match(r"^model\.layers\.(\d+)\.self_attn\.", key))}

    def post_attention(key: str) -> str:
        match = re.match(r"^model\.layers\.(\d+)\.post_attention_layernorm\.(.*)$", key)
        if match is None:
            return key
        layer, rest = match.groups()
        return f"blocks.{layer}.{'post_mixer_norm' if layer in attention_layers else 'mlp_norm'}.{rest}"

    return rename({post_attention(key): value for key, value in state_dict.items()})
