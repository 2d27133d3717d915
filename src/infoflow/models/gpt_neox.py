"""GPT-NeoX (Pythia): LayerNorm, partial rotary positions, attention and MLP in parallel.

Per block, with ``use_parallel_residual`` (every Pythia) attention and MLP both read the block's input x:

    x = x + dense(attn(input_layernorm(x))) + mlp(post_attention_layernorm(x))

and without it they run one after the other, as in GPT-2. ``mlp = dense_4h_to_h(act(dense_h_to_4h(.)))``;
logits ``= embed_out(final_layer_norm(x))``. The fused ``query_key_value`` projection gives each head's
query, key and value side by side ([B, T, H, 3P]). Only the first R = P * ``rotary_pct`` dims of each query
and key head are rotated (halves layout, see ``infoflow.models.rotary``); the rest carry no position.
Attention is the shared causal softmax attention: a knockout sets the logit of each blocked edge to -inf.
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
from infoflow.models.rotary import Rotary, RotaryAttention


class GPTNeoXAttention(RotaryAttention):
    def __init__(self, config: PretrainedConfig, rotary: Rotary) -> None:
        n_heads, d_model = config.num_attention_heads, config.hidden_size
        head_dim = d_model // n_heads
        super().__init__(n_heads, n_heads, head_dim, head_dim**-0.5, None)
        self.rotary = rotary
        self.query_key_value = nn.Linear(d_model, 3 * d_model, bias=config.attention_bias)
        self.dense = nn.Linear(d_model, d_model, bias=config.attention_bias)

    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # [B, T, 3D] -> [B, T, H, 3P] -> q, k, v [B, T, H, P]
        q, k, v = self.query_key_value(hidden).unflatten(-1, (self.n_features, -1)).chunk(3, dim=-1)
        return q, k, v

    def project(self, mixed: torch.Tensor, p: AttentionInputs) -> torch.Tensor:
        return self.dense(mixed.flatten(2))  # [B, T, H, P] -> [B, T, D]


def check_config(config: PretrainedConfig) -> None:
    if config.hidden_act not in ACT2FN:
        raise ValueError(f"unknown GPT-NeoX hidden_act {config.hidden_act!r}")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"hidden_size={config.hidden_size} is not a multiple of num_attention_heads={config.num_attention_heads}"
        )


def build(config: PretrainedConfig) -> CausalLM:
    """A GPT-NeoX model (``model_type`` gpt_neox) from a transformers config."""
    check_config(config)
    d_model, eps = config.hidden_size, config.layer_norm_eps
    rotary = Rotary(config, d_model // config.num_attention_heads)  # shared by every layer
    blocks = [
        Block(
            nn.LayerNorm(d_model, eps=eps),
            GPTNeoXAttention(config, rotary),
            nn.LayerNorm(d_model, eps=eps),
            GPT2MLP(d_model, config.intermediate_size, config.hidden_act),
            parallel=config.use_parallel_residual,
        )
        for _ in range(config.num_hidden_layers)
    ]
    return CausalLM(
        family="gpt_neox",
        embed=nn.Embedding(config.vocab_size, d_model),
        blocks=blocks,
        final_norm=nn.LayerNorm(d_model, eps=eps),
        lm_head=nn.Linear(d_model, config.vocab_size, bias=False),
    )


rename = renamer(
    (
        (r"^gpt_neox\.embed_in\.", "embed."),
        (r"^gpt_neox\.layers\.(\d+)\.input_layernorm\.", r"blocks.\1.mixer_norm."),
        (r"^gpt_neox\.layers\.(\d+)\.attention\.", r"blocks.\1.mixer."),
        (r"^gpt_neox\.layers\.(\d+)\.post_attention_layernorm\.", r"blocks.\1.mlp_norm."),
        (r"^gpt_neox\.layers\.(\d+)\.mlp\.dense_h_to_4h\.", r"blocks.\1.mlp.c_fc."),
        (r"^gpt_neox\.layers\.(\d+)\.mlp\.dense_4h_to_h\.", r"blocks.\1.mlp.c_proj."),
        (r"^gpt_neox\.final_layer_norm\.", "final_norm."),
        (r"^embed_out\.", "lm_head."),  # the hub's Pythia checkpoints name the output embedding embed_out
    )
)

# buffers older checkpoints store: the causal mask and rotary frequencies
BUFFERS = (".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq")


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours (buffers of older checkpoints dropped)."""
    return rename({k: v for k, v in state_dict.items() if not k.endswith(BUFFERS)})
