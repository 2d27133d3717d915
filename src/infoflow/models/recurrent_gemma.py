"""RecurrentGemma (Griffin): RG-LRU recurrent blocks and local (sliding-window) attention, by ``block_types``.

Recurrent block, per channel c of the LRU width W (the gates' weights are block-diagonal over heads):

    y      = gelu(linear_y(h))                                    the gate branch
    x      = conv4(linear_x(h))                                   a causal depthwise conv with bias
    i_t    = sigmoid(x_t W_i + b_i),   r_t = sigmoid(x_t W_r + b_r)
    log a_t = -8 r_t softplus(Lambda)
    m_t    = sqrt(1 - a_t^2)  (m_0 = 1: the state starts at position 0)
    state_t = a_t state_{t-1} + m_t i_t x_t
    out    = linear_out(state * y)

which is the hidden attention (Zimerman et al. 2024)

    alpha_c[t, s] = (prod_{r=s+1..t} a_{r,c}) m_{s,c} i_{s,c}          state[t, c] = sum_{s<=t} alpha_c[t, s] x[s, c]

A knockout zeroes alpha_c[t, s] (``zero-attention``, the default; s's decay of earlier sources stays) or
skips the step of s for the target (``zero-delta``: a_s = 1 and no input, as Mamba's Delta = 0); ``strict``
also removes the blocked sources from the conv (the gates read the conv output, so they are recomputed).
Channels are ranked for feature categories by exp(-8 softplus(Lambda)), the per-step decay at r = 1.

The model scales the embeddings by sqrt(D) (rounded to bf16, as transformers), uses RMSNorms scaling by
1 + w, SwiGLU-like MLPs with biases (gelu), and soft-caps the logits: cap tanh(logits / cap).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from infoflow.models.base import Block, CausalLM, MixingTerms, TokenMixer
from infoflow.models.families import StateDict, renamer
from infoflow.models.llama import GatedMLP
from infoflow.models.modes import KnockoutMode, MixerKind
from infoflow.models.qwen3_next import HybridAttention, OffsetRMSNorm
from infoflow.models.rotary import Rotary
from infoflow.models.ssm import blocked_sources, causal_conv1d, remove_positions, segsum, tail_conv
from infoflow.models.tails import TailRows

GATE_SCALE = 8.0  # log a = -8 r softplus(Lambda)


@dataclass
class RGLRUInputs:
    x_raw: torch.Tensor  # [B, T, W] linear_x output before the conv (strict mode re-convolves it)
    y: torch.Tensor  # [B, T, W] gate branch
    x: torch.Tensor  # [B, T, W] conv output, what the recurrence mixes
    log_a: torch.Tensor  # [B, T, W] fp32, log of the recurrence gate a_t
    scale: torch.Tensor  # [B, T, W] fp32, m_t i_t: how much of x_t enters the state


class RGLRUGates(nn.Module):
    """The RG-LRU's parameters (transformers' layout): Lambda [W] and block-diagonal gate weights [H, W/H, W/H]."""

    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        block = width // n_heads
        self.recurrent_param = nn.Parameter(torch.empty(width))
        self.input_gate_weight = nn.Parameter(torch.empty(n_heads, block, block))
        self.input_gate_bias = nn.Parameter(torch.empty(n_heads, block))
        self.recurrent_gate_weight = nn.Parameter(torch.empty(n_heads, block, block))
        self.recurrent_gate_bias = nn.Parameter(torch.empty(n_heads, block))

    def gate(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """sigmoid(x W + b) per head: x [B, T, W] -> [B, T, W]."""
        heads = x.unflatten(-1, (weight.shape[0], -1))  # [B, T, H, W/H]
        return torch.sigmoid(torch.einsum("bthi,hij->bthj", heads, weight) + bias).flatten(-2)

    def forward(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """log a [B, T, W] and m i [B, T, W] (fp32) of the conv output x at positions start..start+T-1."""
        input_gate = self.gate(x, self.input_gate_weight, self.input_gate_bias).float()
        recurrent_gate = self.gate(x, self.recurrent_gate_weight, self.recurrent_gate_bias).float()
        log_a = -GATE_SCALE * recurrent_gate * F.softplus(self.recurrent_param.float())
        multiplier = torch.sqrt(1 - torch.exp(2 * log_a))
        if start == 0:
            multiplier[:, 0] = 1.0  # the state starts at position 0: its input is not normalised
        return log_a, multiplier * input_gate


class RGLRUMixer(TokenMixer):
    """The recurrent block of RecurrentGemma; each LRU channel is a feature (P = 1)."""

    kind = MixerKind.RG_LRU
    feature_name = "channel"
    knockout_modes = frozenset({KnockoutMode.ZERO_ATTENTION, KnockoutMode.ZERO_DELTA})
    supports_strict = True

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        d_model, width, kernel = config.hidden_size, config.lru_width, config.conv1d_width
        self.n_features = width
        self.linear_y = nn.Linear(d_model, width)
        self.linear_x = nn.Linear(d_model, width)
        self.linear_out = nn.Linear(width, d_model)
        self.conv_1d = nn.Conv1d(width, width, kernel, groups=width, padding=kernel - 1)
        self.rg_lru = RGLRUGates(width, config.num_attention_heads)
        self.act = ACT2FN[config.hidden_activation]

    def inputs(self, x_raw: torch.Tensor, x: torch.Tensor, y: torch.Tensor, start: int) -> RGLRUInputs:
        log_a, scale = self.rg_lru(x, start)
        return RGLRUInputs(x_raw=x_raw, y=y, x=x, log_a=log_a, scale=scale)

    def prepare(self, hidden: torch.Tensor) -> RGLRUInputs:
        x_raw = self.linear_x(hidden)
        return self.inputs(x_raw, causal_conv1d(x_raw, self.conv_1d), self.act(self.linear_y(hidden)), start=0)

    def prepare_tail(self, hidden_tail: torch.Tensor, prefix: RGLRUInputs, start: int, rows: TailRows) -> RGLRUInputs:
        x_raw = self.linear_x(hidden_tail)
        x = tail_conv(prefix.x_raw, x_raw, start, self.conv_1d, rows)
        return self.inputs(x_raw, x, self.act(self.linear_y(hidden_tail)), start)

    def mix(self, p: RGLRUInputs) -> torch.Tensor:
        """The sequential scan in fp32, as transformers: [B, T, W, 1]."""
        a, inputs = p.log_a.exp(), p.scale * p.x.float()  # [B, T, W]
        state = torch.zeros_like(inputs[:, 0])
        outputs = []
        for t in range(inputs.shape[1]):
            state = a[:, t] * state + inputs[:, t]
            outputs.append(state)
        return torch.stack(outputs, dim=1)[..., None]

    def terms(
        self,
        p: RGLRUInputs,
        blocked: torch.Tensor | None = None,
        mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION,
        strict: bool = False,
        rows: torch.Tensor | None = None,
    ) -> MixingTerms:
        rows = torch.arange(p.x.shape[1], device=p.x.device) if rows is None else rows
        sources = blocked_sources(blocked)  # [B, T]
        x, log_a, scale = p.x, p.log_a, p.scale
        if strict and sources is not None:  # blocked sources never reach the conv (nor the gates read from it)
            x = causal_conv1d(remove_positions(p.x_raw, sources), self.conv_1d)
            log_a, scale = self.rg_lru(x, start=0)
        if mode is KnockoutMode.ZERO_DELTA and sources is not None:  # a = 1 at the sources: no decay there
            log_a = remove_positions(log_a, sources)
        # alpha[b, c, r, s] = exp(sum_{q=s+1..t} log a[b, q, c]) m i [b, s, c], t = rows[r]
        alpha = torch.exp(segsum(log_a.transpose(1, 2), rows)) * scale.transpose(1, 2)[:, :, None, :]
        if blocked is not None:
            alpha = alpha.masked_fill(blocked[:, None, rows], 0.0)
        values = x.float()[..., None]  # [B, T, W, 1]
        return MixingTerms(matrix=alpha, values=values, skip=torch.zeros_like(values[:, rows]))

    def project(self, mixed: torch.Tensor, p: RGLRUInputs) -> torch.Tensor:
        return self.linear_out(mixed[..., 0].to(p.y.dtype) * p.y)

    def decay_norms(self) -> torch.Tensor:
        return torch.exp(-GATE_SCALE * F.softplus(self.rg_lru.recurrent_param.float()))  # [W], decay at r = 1


class ScaledEmbedding(nn.Embedding):
    """Token embeddings times a constant (Gemma: sqrt(D), rounded to bf16 as transformers does)."""

    def __init__(self, vocab_size: int, dim: int, scale: float) -> None:
        super().__init__(vocab_size, dim)
        self.scale = scale

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embedded = super().forward(input_ids)
        return embedded * self.scale


class SoftCappedHead(nn.Linear):
    """Logits ``cap tanh(W h / cap)``."""

    def __init__(self, dim: int, vocab_size: int, cap: float) -> None:
        super().__init__(dim, vocab_size, bias=False)
        self.cap = cap

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(super().forward(hidden) / self.cap) * self.cap


def bf16_sqrt(value: int) -> float:
    """sqrt(value) rounded to bf16 (transformers keeps Gemma's embedding scale as a bf16 buffer)."""
    return float(torch.tensor(value**0.5, dtype=torch.bfloat16, device="cpu"))


def mixer(config: PretrainedConfig, layer: int) -> TokenMixer:
    kind = config.layers_block_type[layer]
    if kind == "recurrent":
        return RGLRUMixer(config)
    if kind == "attention":
        return HybridAttention(
            config,
            Rotary(config, config.head_dim),  # over the first partial_rotary_factor of each head's channels
            norm=None,
            output_gate=False,
            bias=config.attention_bias,
            sliding_window=config.attention_window_size,
            out_bias=True,
        )
    raise ValueError(f"layer {layer} has block type {kind!r}; expected recurrent or attention")


def build(config: PretrainedConfig) -> CausalLM:
    """A RecurrentGemma model from a transformers ``RecurrentGemmaConfig``."""
    d_model, eps = config.hidden_size, config.rms_norm_eps
    mlp_width = config.intermediate_size // 2
    blocks = [
        Block(
            OffsetRMSNorm(d_model, eps),
            mixer(config, layer),
            OffsetRMSNorm(d_model, eps),
            GatedMLP(d_model, mlp_width, config.hidden_activation, True),
        )
        for layer in range(config.num_hidden_layers)
    ]
    return CausalLM(
        family="recurrent_gemma",
        embed=ScaledEmbedding(config.vocab_size, d_model, bf16_sqrt(d_model)),
        blocks=blocks,
        final_norm=OffsetRMSNorm(d_model, eps),
        lm_head=SoftCappedHead(d_model, config.vocab_size, config.logits_soft_cap),
    )


rename = renamer(
    (
        (r"^model\.embed_tokens\.", "embed."),
        (r"^model\.layers\.(\d+)\.temporal_pre_norm\.", r"blocks.\1.mixer_norm."),
        (r"^model\.layers\.(\d+)\.temporal_block\.", r"blocks.\1.mixer."),
        (r"^model\.layers\.(\d+)\.channel_pre_norm\.", r"blocks.\1.mlp_norm."),
        (r"^model\.layers\.(\d+)\.mlp_block\.", r"blocks.\1.mlp."),
        (r"^model\.final_norm\.", "final_norm."),
    )
)


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours (the embedding scale is a constant, not a weight)."""
    return rename({k: v for k, v in state_dict.items() if not k.endswith("normalizer")})
