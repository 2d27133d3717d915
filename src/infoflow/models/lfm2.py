"""LFM2: gated short-convolution layers (``conv``) and softmax attention layers (``full_attention``).

Short-conv layer, per channel c, with B, C, x = in_proj(h) and a causal depthwise conv of K = ``conv_L_cache``
taps w[c, 0..K-1] (3 in the released models):

    y[t, c] = C[t, c] (bias[c] + sum_{j=0..K-1} w[c, j] B[t-K+1+j, c] x[t-K+1+j, c])
    out     = out_proj(y)

which is a banded hidden attention, exact and without state beyond the kernel:

    A_c[t, s] = C[t, c] w[c, K-1-(t-s)] B[s, c]      for 0 <= t - s < K, else 0
    y[t, c]   = sum_s A_c[t, s] x[s, c] + C[t, c] bias[c]

so information travels more than K - 1 positions only through the attention layers. A knockout of t <- s
zeroes A_c[t, s] (the conv tap from s to t) in every channel. Attention layers: GQA with RMS-normed q and k
per head, rotary; MLPs SwiGLU; norms before the mixer and the MLP, one final norm (``embedding_norm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from transformers import PretrainedConfig

from infoflow.models.base import Block, CausalLM, MixingTerms, RMSNorm, TokenMixer
from infoflow.models.families import StateDict, renamer
from infoflow.models.llama import GatedMLP
from infoflow.models.modes import KnockoutMode, MixerKind
from infoflow.models.qwen3_next import HybridAttention
from infoflow.models.rotary import Rotary
from infoflow.models.ssm import causal_conv1d


@dataclass
class ShortConvInputs:
    B: torch.Tensor  # [B, T, D] input gate
    C: torch.Tensor  # [B, T, D] output gate
    x: torch.Tensor  # [B, T, D]


class ShortConv(TokenMixer):
    """The gated short convolution; each channel is a feature (one value per position, P = 1)."""

    kind = MixerKind.SHORT_CONV
    feature_name = "channel"

    def __init__(self, d_model: int, kernel: int, bias: bool) -> None:
        super().__init__()
        self.n_features = d_model
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.conv = nn.Conv1d(d_model, d_model, kernel, groups=d_model, padding=kernel - 1, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def prepare(self, hidden: torch.Tensor) -> ShortConvInputs:
        B, C, x = self.in_proj(hidden).chunk(3, dim=-1)
        return ShortConvInputs(B=B, C=C, x=x)

    def mix(self, p: ShortConvInputs) -> torch.Tensor:
        return (p.C * causal_conv1d(p.B * p.x, self.conv))[..., None]  # [B, T, D, 1]

    def terms(
        self,
        p: ShortConvInputs,
        blocked: torch.Tensor | None = None,
        mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION,
        strict: bool = False,
        rows: torch.Tensor | None = None,
    ) -> MixingTerms:
        seq_len, kernel = p.x.shape[1], self.conv.kernel_size[0]
        rows = torch.arange(seq_len, device=p.x.device) if rows is None else rows
        lag = rows[:, None] - torch.arange(seq_len, device=p.x.device)[None, :]  # [R, T]: t - s
        band = (lag >= 0) & (lag < kernel)
        weight = self.conv.weight[:, 0].float()  # [D, K]
        taps = weight[:, (kernel - 1 - lag).clamp(0, kernel - 1)] * band  # [D, R, T]: w[c, K-1-(t-s)] in the band
        C, B = p.C.float().transpose(1, 2), p.B.float().transpose(1, 2)  # [B, D, T]
        # A[b, c, r, s] = C[b, t, c] w[c, K-1-(t-s)] B[b, s, c], t = rows[r]
        matrix = C[:, :, rows, None] * taps * B[:, :, None, :]
        if blocked is not None:
            matrix = matrix.masked_fill(blocked[:, None, rows], 0.0)
        skip = (
            torch.zeros_like(C[:, :, rows])
            if self.conv.bias is None
            else C[:, :, rows] * self.conv.bias.float()[:, None]
        )
        return MixingTerms(matrix=matrix, values=p.x.float()[..., None], skip=skip.transpose(1, 2)[..., None])

    def project(self, mixed: torch.Tensor, p: ShortConvInputs) -> torch.Tensor:
        return self.out_proj(mixed[..., 0].to(p.x.dtype))


def mlp_width(config: PretrainedConfig) -> int:
    """transformers' feed-forward width: 2/3 of ``intermediate_size``, scaled and rounded up to a multiple."""
    width = config.intermediate_size
    if config.block_auto_adjust_ff_dim:
        width = int(2 * width / 3)
        if config.block_ffn_dim_multiplier is not None:
            width = int(config.block_ffn_dim_multiplier * width)
            width = config.block_multiple_of * ((width + config.block_multiple_of - 1) // config.block_multiple_of)
    return width


def mixer(config: PretrainedConfig, layer: int, rotary: Rotary) -> TokenMixer:
    kind = config.layer_types[layer]
    if kind == "conv":
        return ShortConv(config.hidden_size, config.conv_L_cache, config.conv_bias)
    if kind == "full_attention":
        return HybridAttention(config, rotary, partial(RMSNorm, eps=config.norm_eps), output_gate=False)
    raise ValueError(f"layer {layer} has layer type {kind!r}; expected conv or full_attention")


def build(config: PretrainedConfig) -> CausalLM:
    """An LFM2 model from a transformers ``Lfm2Config``."""
    head_dim = config.hidden_size // config.num_attention_heads
    rotary = Rotary(config, head_dim)
    d_model, eps = config.hidden_size, config.norm_eps
    blocks = [
        Block(
            RMSNorm(d_model, eps),
            mixer(config, layer, rotary),
            RMSNorm(d_model, eps),
            GatedMLP(d_model, mlp_width(config), "silu", False),
        )
        for layer in range(config.num_hidden_layers)
    ]
    return CausalLM(
        family="lfm2",
        embed=nn.Embedding(config.vocab_size, d_model),
        blocks=blocks,
        final_norm=RMSNorm(d_model, eps),
        lm_head=nn.Linear(d_model, config.vocab_size, bias=False),
    )


rename = renamer(
    (
        (r"^model\.embed_tokens\.", "embed."),
        (r"^model\.layers\.(\d+)\.operator_norm\.", r"blocks.\1.mixer_norm."),
        (r"^model\.layers\.(\d+)\.self_attn\.out_proj\.", r"blocks.\1.mixer.o_proj."),
        (r"^model\.layers\.(\d+)\.self_attn\.q_layernorm\.", r"blocks.\1.mixer.q_norm."),
        (r"^model\.layers\.(\d+)\.self_attn\.k_layernorm\.", r"blocks.\1.mixer.k_norm."),
        (r"^model\.layers\.(\d+)\.(self_attn|conv)\.", r"blocks.\1.mixer."),
        (r"^model\.layers\.(\d+)\.ffn_norm\.", r"blocks.\1.mlp_norm."),
        (r"^model\.layers\.(\d+)\.feed_forward\.w1\.", r"blocks.\1.mlp.gate_proj."),
        (r"^model\.layers\.(\d+)\.feed_forward\.w3\.", r"blocks.\1.mlp.up_proj."),
        (r"^model\.layers\.(\d+)\.feed_forward\.w2\.", r"blocks.\1.mlp.down_proj."),
        (r"^model\.embedding_norm\.", "final_norm."),
    )
)


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours."""
    return rename(dict(state_dict))
