"""xLSTM (transformers' ``xlstm``, the xLSTM-7B architecture): mLSTM layers and SwiGLU MLPs, pre-norm.

mLSTM layer, per head h, on x = rmsnorm(h):

    q, k, v  = W_q x, W_k x, W_v x                                  (per head: K = qk_dim / H, V = v_dim / H)
    i~, f~   = cap tanh(W_i x / cap), cap tanh(W_f x / cap)         soft-capped gate pre-activations (cap 15)
    h_t      = mLSTM(q, k, v, i~, logsigmoid(f~)): see ``mlstm``     h_t = sum_s A_h[t, s] v_s
    out      = W_o (sigmoid(W_og x) * layernorm_per_head(h))

There is no convolution or token shift: a position reaches another only through the mLSTM's memory, so
``strict`` has nothing more to remove and is not offered. Only ``weight_mode`` single (separate
projections, as the released checkpoints) is supported. Heads are ranked for feature categories by
sigmoid(cap tanh(b_f / cap)), the forget gate at x = 0. The logits are soft-capped: cap tanh(logits / cap).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from infoflow.models import mlstm
from infoflow.models.attention import soft_cap
from infoflow.models.base import Block, CausalLM, MixingTerms, RMSNorm, TokenMixer
from infoflow.models.families import StateDict, renamer
from infoflow.models.llama import GatedMLP
from infoflow.models.modes import KnockoutMode, MixerKind
from infoflow.models.recurrent_gemma import SoftCappedHead


class HeadLayerNorm(nn.Module):
    """LayerNorm over each head's V channels (fp32, no affine), then one weight over all H V channels:
    [B, T, H, V] -> [B, T, H V]."""

    def __init__(self, n_heads: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_heads * head_dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        normed = F.layer_norm(x.float(), x.shape[-1:], eps=self.eps).to(dtype)
        return normed.flatten(-2) * self.weight


@dataclass
class MLSTMInputs:
    q: torch.Tensor  # [B, T, H, K]
    k: torch.Tensor  # [B, T, H, K]
    v: torch.Tensor  # [B, T, H, V]
    i: torch.Tensor  # [B, T, H] fp32 input gate pre-activation (soft-capped)
    log_f: torch.Tensor  # [B, T, H] fp32 log forget gate, logsigmoid of the soft-capped pre-activation
    o: torch.Tensor  # [B, T, H V] output gate pre-activation


class MLSTMLayer(TokenMixer):
    """xLSTM's mLSTM layer (separate projections: ``weight_mode`` single); each head is a feature."""

    kind = MixerKind.MLSTM
    knockout_modes = frozenset({KnockoutMode.ZERO_ATTENTION, KnockoutMode.NUMERATOR_ONLY, KnockoutMode.ZERO_DELTA})

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        d_model, heads, bias = config.hidden_size, config.num_heads, config.use_bias
        self.n_features = heads
        self.qk_dim, self.v_dim = int(d_model * config.qk_dim_factor), int(d_model * config.v_dim_factor)
        self.q = nn.Linear(d_model, self.qk_dim, bias=bias)
        self.k = nn.Linear(d_model, self.qk_dim, bias=bias)
        self.v = nn.Linear(d_model, self.v_dim, bias=bias)
        self.ogate_preact = nn.Linear(d_model, self.v_dim, bias=bias)
        self.igate_preact = nn.Linear(d_model, heads, bias=True)
        self.fgate_preact = nn.Linear(d_model, heads, bias=True)
        self.multihead_norm = HeadLayerNorm(heads, self.v_dim // heads, config.norm_eps)
        self.out_proj = nn.Linear(self.v_dim, d_model, bias=bias)
        self.gate_cap, self.eps = config.gate_soft_cap, config.eps

    def prepare(self, hidden: torch.Tensor) -> MLSTMInputs:
        q, k, v = (proj(hidden).unflatten(-1, (self.n_features, -1)) for proj in (self.q, self.k, self.v))
        i, f = (soft_cap(proj(hidden).float(), self.gate_cap) for proj in (self.igate_preact, self.fgate_preact))
        return MLSTMInputs(q=q, k=k, v=v, i=i, log_f=F.logsigmoid(f), o=self.ogate_preact(hidden))

    def mix(self, p: MLSTMInputs) -> torch.Tensor:
        return mlstm.recurrence(p.q, p.k, p.v, p.i, p.log_f, self.eps)

    def terms(
        self,
        p: MLSTMInputs,
        blocked: torch.Tensor | None = None,
        mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION,
        strict: bool = False,
        rows: torch.Tensor | None = None,
    ) -> MixingTerms:
        matrix = mlstm.hidden_attention(p.q, p.k, p.i, p.log_f, self.eps, blocked, mode, rows)
        values = p.v.float()
        return MixingTerms(
            matrix=matrix, values=values, skip=values.new_zeros(values.shape[0], matrix.shape[2], *values.shape[2:])
        )

    def project(self, mixed: torch.Tensor, p: MLSTMInputs) -> torch.Tensor:
        return self.out_proj(torch.sigmoid(p.o) * self.multihead_norm(mixed, p.o.dtype))

    def decay_norms(self) -> torch.Tensor:
        return torch.sigmoid(soft_cap(self.fgate_preact.bias.float(), self.gate_cap))  # [H], the forget gate at x = 0


def mlp_width(config: PretrainedConfig) -> int:
    """transformers' feed-forward width: hidden_size * ffn_proj_factor rounded up to a multiple."""
    multiple = config.ffn_round_up_to_multiple_of
    return int((config.hidden_size * config.ffn_proj_factor + multiple - 1) // multiple * multiple)


def check_config(config: PretrainedConfig) -> None:
    if config.weight_mode != "single":
        raise ValueError(
            f"xLSTM weight_mode {config.weight_mode!r} is not supported; convert the checkpoint to 'single' "
            "(separate q, k, v and gate projections, as NX-AI/xLSTM-7b)"
        )
    if config.use_bias:
        raise ValueError(
            "xLSTM with use_bias=True (biased norms and projections) is not supported; use_bias must be False"
        )


def build(config: PretrainedConfig) -> CausalLM:
    """An xLSTM model from a transformers ``xLSTMConfig``."""
    check_config(config)
    d_model, eps = config.hidden_size, config.norm_eps
    blocks = [
        Block(
            RMSNorm(d_model, eps),
            MLSTMLayer(config),
            RMSNorm(d_model, eps),
            GatedMLP(d_model, mlp_width(config), "silu", False),
        )
        for _ in range(config.num_hidden_layers)
    ]
    cap = config.output_logit_soft_cap
    return CausalLM(
        family="xlstm",
        embed=nn.Embedding(config.vocab_size, config.embedding_dim),
        blocks=blocks,
        final_norm=RMSNorm(d_model, eps),
        lm_head=nn.Linear(d_model, config.vocab_size, bias=False)
        if cap is None
        else SoftCappedHead(d_model, config.vocab_size, cap),
    )


rename = renamer(
    (
        (r"^backbone\.embeddings\.", "embed."),
        (r"^backbone\.blocks\.(\d+)\.norm_mlstm\.", r"blocks.\1.mixer_norm."),
        (r"^backbone\.blocks\.(\d+)\.mlstm_layer\.", r"blocks.\1.mixer."),
        (r"^backbone\.blocks\.(\d+)\.norm_ffn\.", r"blocks.\1.mlp_norm."),
        (r"^backbone\.blocks\.(\d+)\.ffn\.proj_up_gate\.", r"blocks.\1.mlp.gate_proj."),
        (r"^backbone\.blocks\.(\d+)\.ffn\.proj_up\.", r"blocks.\1.mlp.up_proj."),
        (r"^backbone\.blocks\.(\d+)\.ffn\.proj_down\.", r"blocks.\1.mlp.down_proj."),
        (r"^backbone\.out_norm\.", "final_norm."),
    )
)


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours."""
    return rename(dict(state_dict))
