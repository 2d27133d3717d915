"""Falcon-H1: a Mamba-2 branch and an attention branch side by side in every layer, then a SwiGLU MLP.

Per layer, with u = input_layernorm(h) and transformers' multipliers (m_*):

    s = m_ssm_out  Mamba2(m_ssm_in u)      in_proj output scaled per section [z, x, B, C, dt] by the mup vector;
                                          output gate y * silu(z), or a gated RMSNorm where ``mamba_rms_norm``
    a = m_attn_out Attn(m_attn_in u)       Llama attention (RoPE, GQA) with keys scaled by m_key
    h = h + s + a
    h = h + m_down down(up(v) * silu(m_gate gate(v))),   v = pre_ff_layernorm(h)

with embeddings scaled by ``embedding_multiplier`` and logits by ``lm_head_multiplier``.

**One layer, two mixers.** Both branches read the same normed input and only their sum enters the residual
stream, so a layer is one :class:`~infoflow.models.base.Block` whose mixer is the composite
:class:`ParallelMixer`: its features are the attention heads (H_a, value width P_a) followed by the SSM heads
(H_s, width P_s), values zero-padded to P = max(P_a, P_s). Its hidden attention is the two branches' matrices
stacked along the features,

    mixed[t, f] = sum_s A_f[t, s] v[s, f]                         (f < H_a: softmax attention, no skip)
    mixed[t, f] = sum_s M_f[t, s] Delta[s, f] x[s, f] + D_f x[t, f]   (f >= H_a: SSD head f - H_a)

so ``terms``, feature exemptions and the fast engine's tails need nothing new: the engines never learn that a
layer has two branches. (A block holding two mixers would have made every engine, and every intervention that
reaches a layer's mixing, loop over mixers; the composite costs a zero padding of the narrower values.)

**Knockout.** A blocked edge (t, s) is removed in both branches: its attention logit is set to -inf before
the softmax (the row renormalises) and M_f[t, s] = 0 in every SSM head (zero-delta and strict act on the SSM
branch only, which has the Delta and the conv). One branch only: ``FeatureSelection(kinds={MixerKind.ATTENTION})``
or ``{MixerKind.SSD}`` exempts the other branch's features; decay categories rank the SSM heads only. Being a
feature selection, the choice of branch reaches both engines the way decay categories do (per knockout, batched
in one tail pass), where a new knockout option would have had to be threaded through each engine.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from infoflow.models.attention import AttentionInputs
from infoflow.models.base import CausalLM, MixingTerms, RMSNorm, TokenMixer
from infoflow.models.families import renamer
from infoflow.models.llama import GatedMLP, LlamaAttention, pre_norm_blocks
from infoflow.models.mamba2 import GatedRMSNorm, Mamba2Inputs, Mamba2Mixer
from infoflow.models.modes import KnockoutMode, MixerKind
from infoflow.models.rotary import Rotary
from infoflow.models.tails import TailRows


class FalconH1Attention(LlamaAttention):
    """Llama attention reading ``m_attn_in u``, with keys scaled by ``m_key`` (before rotation) and the output
    by ``m_attn_out``."""

    def __init__(self, config: PretrainedConfig, layer: int, rotary: Rotary) -> None:
        super().__init__(config, layer, rotary)
        self.in_multiplier = config.attention_in_multiplier
        self.key_multiplier = config.key_multiplier
        self.out_multiplier = config.attention_out_multiplier

    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = super().projections(hidden * self.in_multiplier)
        return q, k * self.key_multiplier, v

    def project(self, mixed: torch.Tensor, p: AttentionInputs) -> torch.Tensor:
        return super().project(mixed, p) * self.out_multiplier


class FalconH1SSM(Mamba2Mixer):
    """The Mamba-2 branch: input scaled by ``m_ssm_in``, in_proj output by the mup vector (one multiplier per
    section z, x, B, C, dt), output gate ``y * silu(z)`` or a gated RMSNorm, output scaled by ``m_ssm_out``."""

    def __init__(self, config: PretrainedConfig) -> None:
        d_inner = config.mamba_d_ssm or int(config.mamba_expand * config.hidden_size)
        n_groups = config.mamba_n_groups
        super().__init__(
            d_model=config.hidden_size,
            n_heads=config.mamba_n_heads,
            head_dim=config.mamba_d_head,
            d_state=config.mamba_d_state,
            n_groups=n_groups,
            d_conv=config.mamba_d_conv,
            conv_bias=config.mamba_conv_bias,
            proj_bias=config.mamba_proj_bias,
            norm_eps=config.rms_norm_eps,
            norm_group_size=d_inner // n_groups,
            time_step_limit=(float(config.time_step_limit[0]), float(config.time_step_limit[1])),
            chunk_size=config.mamba_chunk_size,
        )
        if self.d_inner != d_inner:
            raise ValueError(f"mamba_n_heads * mamba_d_head = {self.d_inner} must equal mamba_d_ssm = {d_inner}")
        self.out_proj = nn.Linear(d_inner, config.hidden_size, bias=config.projectors_bias)
        norm_before_gate = config.mamba_norm_before_gate
        norm = GatedRMSNorm(d_inner, config.rms_norm_eps, d_inner // n_groups, norm_before_gate)
        self.norm = norm if config.mamba_rms_norm else None  # type: ignore[assignment]  # None: y * silu(z)
        self.in_multiplier, self.out_multiplier = config.ssm_in_multiplier, config.ssm_out_multiplier
        group_width = n_groups * config.mamba_d_state
        # the mup vector's sections: z, x, B, C, dt
        self.mup_sections = tuple(
            zip((d_inner, d_inner, group_width, group_width, self.n_features), config.ssm_multipliers, strict=True)
        )

    def in_projection(self, hidden: torch.Tensor) -> torch.Tensor:
        projected = self.in_proj(hidden * self.in_multiplier)  # [B, T, Di + Di + 2 G N + H]
        mup = torch.cat([torch.full((n,), m, device=hidden.device) for n, m in self.mup_sections])  # fp32, as built
        return projected * mup.to(projected.dtype)

    def project(self, mixed: torch.Tensor, p: Mamba2Inputs) -> torch.Tensor:
        y = mixed.flatten(2)  # [B, T, Di] fp32
        gated = y * F.silu(p.z) if self.norm is None else self.norm(y, p.z)
        return self.out_proj(gated.to(p.z.dtype)) * self.out_multiplier


@dataclass
class ParallelInputs:
    """Both branches' prepared inputs in one flat dataclass (the engines map its tensor fields)."""

    q: torch.Tensor  # [B, T, H_a, P_a] rotated queries
    k: torch.Tensor  # [B, T, Hkv, P_a] rotated keys
    v: torch.Tensor  # [B, T, Hkv, P_a]
    xBC_raw: torch.Tensor  # the SSM branch's fields, as in Mamba2Inputs
    z: torch.Tensor
    x: torch.Tensor
    delta: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor

    @classmethod
    def of(cls, attention: AttentionInputs, ssm: Mamba2Inputs) -> ParallelInputs:
        return cls(**vars(attention), **vars(ssm))

    def part(self, kind: type) -> Any:
        """The fields of one branch's inputs dataclass ``kind``."""
        return kind(**{f.name: getattr(self, f.name) for f in fields(kind)})

    @property
    def attention(self) -> AttentionInputs:
        return self.part(AttentionInputs)

    @property
    def ssm(self) -> Mamba2Inputs:
        return self.part(Mamba2Inputs)


class ParallelMixer(TokenMixer):
    """Attention and Mamba-2 side by side; features: the attention heads, then the SSM heads (fp32 mixing,
    values zero-padded to the wider head). Knockout options reach the branches that support them."""

    kind = MixerKind.PARALLEL
    knockout_modes = frozenset({KnockoutMode.ZERO_ATTENTION, KnockoutMode.ZERO_DELTA})  # the Mamba-2 branch's
    supports_strict = True

    def __init__(self, attention: FalconH1Attention, ssm: FalconH1SSM) -> None:
        super().__init__()
        self.attention, self.ssm = attention, ssm
        self.n_features = attention.n_features + ssm.n_features
        self.value_dim = max(attention.head_dim, ssm.head_dim)

    def join(self, attention: torch.Tensor, ssm: torch.Tensor) -> torch.Tensor:
        """[..., H_a, P_a] and [..., H_s, P_s] -> [..., H_a + H_s, P] fp32, zero-padded."""
        return torch.cat([F.pad(x.float(), (0, self.value_dim - x.shape[-1])) for x in (attention, ssm)], dim=-2)

    def prepare(self, hidden: torch.Tensor) -> ParallelInputs:
        return ParallelInputs.of(self.attention.prepare(hidden), self.ssm.prepare(hidden))

    def prepare_tail(
        self, hidden_tail: torch.Tensor, prefix: ParallelInputs, start: int, rows: TailRows
    ) -> ParallelInputs:
        attention = self.attention.prepare_tail(hidden_tail, prefix.attention, start, rows)
        return ParallelInputs.of(attention, self.ssm.prepare_tail(hidden_tail, prefix.ssm, start, rows))

    def mix(self, p: ParallelInputs) -> torch.Tensor:
        return self.join(self.attention.mix(p.attention), self.ssm.mix(p.ssm))

    def terms(
        self,
        p: ParallelInputs,
        blocked: torch.Tensor | None = None,
        mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION,
        strict: bool = False,
        rows: torch.Tensor | None = None,
    ) -> MixingTerms:
        attention = self.attention.terms(p.attention, blocked, mode, strict, rows)
        ssm = self.ssm.terms(p.ssm, blocked, mode, strict, rows)
        return MixingTerms(
            matrix=torch.cat([attention.matrix, ssm.matrix], dim=1),  # [B, H_a + H_s, R, T]
            values=self.join(attention.values, ssm.values),
            skip=self.join(attention.skip, ssm.skip),
        )

    def project(self, mixed: torch.Tensor, p: ParallelInputs) -> torch.Tensor:
        """The sum of both branches' outputs [B, T, D] from mixed [B, T, H_a + H_s, P]."""
        heads = self.attention.n_features
        attention = mixed[:, :, :heads, : self.attention.head_dim].to(p.v.dtype)
        ssm = mixed[:, :, heads:, : self.ssm.head_dim]
        return self.ssm.project(ssm, p.ssm) + self.attention.project(attention, p.attention)

    def decay_norms(self) -> torch.Tensor:
        return self.ssm.decay_norms()  # [H_s]

    def feature_kinds(self) -> tuple[tuple[MixerKind, int], ...]:
        return (*self.attention.feature_kinds(), *self.ssm.feature_kinds())


class FalconH1MLP(GatedMLP):
    """``m_down down(up(x) * act(m_gate gate(x)))``."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config.hidden_size, config.intermediate_size, config.hidden_act, config.mlp_bias)
        self.gate_multiplier, self.down_multiplier = config.mlp_multipliers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = self.up_proj(x) * self.act(self.gate_proj(x) * self.gate_multiplier)
        return self.down_proj(gated) * self.down_multiplier


class ScaledEmbedding(nn.Embedding):
    """Token embeddings times ``multiplier``."""

    def __init__(self, vocab_size: int, dim: int, multiplier: float) -> None:
        super().__init__(vocab_size, dim)
        self.multiplier = multiplier

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids) * self.multiplier


class ScaledLinear(nn.Linear):
    """A linear map (no bias) whose output is multiplied by ``multiplier`` (the scaled lm_head)."""

    def __init__(self, d_in: int, d_out: int, multiplier: float) -> None:
        super().__init__(d_in, d_out, bias=False)
        self.multiplier = multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.multiplier


def build(config: PretrainedConfig) -> CausalLM:
    """A Falcon-H1 model from a transformers ``FalconH1Config``."""
    blocks = pre_norm_blocks(
        config,
        lambda layer, rotary: ParallelMixer(FalconH1Attention(config, layer, rotary), FalconH1SSM(config)),
        lambda: FalconH1MLP(config),
    )
    d_model = config.hidden_size
    return CausalLM(
        family="falcon_h1",
        embed=ScaledEmbedding(config.vocab_size, d_model, config.embedding_multiplier),
        blocks=blocks,
        final_norm=RMSNorm(d_model, config.rms_norm_eps),
        lm_head=ScaledLinear(d_model, config.vocab_size, config.lm_head_multiplier),
    )


rename = renamer(
    (
        (r"^model\.embed_tokens\.", "embed."),
        (r"^model\.layers\.(\d+)\.input_layernorm\.", r"blocks.\1.mixer_norm."),
        (r"^model\.layers\.(\d+)\.self_attn\.", r"blocks.\1.mixer.attention."),
        (r"^model\.layers\.(\d+)\.mamba\.", r"blocks.\1.mixer.ssm."),
        (r"^model\.layers\.(\d+)\.pre_ff_layernorm\.", r"blocks.\1.mlp_norm."),
        (r"^model\.layers\.(\d+)\.feed_forward\.", r"blocks.\1.mlp."),
        (r"^model\.final_layernorm\.", "final_norm."),
    )
)

convert_state_dict = rename  # transformers' names -> ours
