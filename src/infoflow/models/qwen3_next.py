"""Qwen3-Next: Gated DeltaNet layers and gated full-attention layers (3:1 by ``layer_types``), MoE MLPs.

Gated DeltaNet layer (``linear_attention``), per value head h (key heads shared by H / Hk value heads):

    q, k, v  = silu(conv4(in_proj(x)))            a short causal conv over time, no bias
    g[t, h]  = -exp(A_log[h]) softplus(a[t, h] + dt_bias[h])       beta[t, h] = sigmoid(b[t, h])
    o        = gated delta rule (q, k l2-normalised, q / sqrt(K)): see ``delta_rule``
    out      = out_proj(w * rmsnorm(o[t, h]) * silu(z[t, h]))      norm per head, then the gate

whose hidden attention is exact: o[t, h] = sum_{s<=t} A_h[t, s] v[s, h], A_h = W (I + L)^{-1} diag(beta).
Full-attention layers: softmax attention with RMS-normed q and k per head (weights 1 + w), rotary on the
first ``partial_rotary_factor`` of each head, and a sigmoid output gate: ``o_proj(attn * sigmoid(gate))``.
Every RMSNorm of the model scales by ``1 + w``. MLPs are sparse MoE blocks (softmax router, top-k, a
shared expert with a sigmoid gate) or dense SwiGLU (``mlp_only_layers``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from infoflow.models import delta_rule
from infoflow.models.attention import AttentionInputs
from infoflow.models.base import Block, CausalLM, MixingTerms, TokenMixer
from infoflow.models.families import StateDict, renamer
from infoflow.models.llama import GatedMLP
from infoflow.models.modes import KnockoutMode, MixerKind
from infoflow.models.moe import Experts, MoE, Router, Routing, stack_experts
from infoflow.models.rotary import Rotary, RotaryAttention
from infoflow.models.ssm import blocked_sources, remove_positions, silu_conv, tail_silu_conv
from infoflow.models.tails import TailRows

CHUNK_SIZE = 64  # transformers' chunk length for the delta rule's torch form


class OffsetRMSNorm(nn.Module):
    """``(1 + w) * x / sqrt(mean(x^2) + eps)``, in fp32 and rounded once (Qwen3-Next, Gemma)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)


class GatedHeadNorm(nn.Module):
    """``w * rmsnorm(o) * silu(z)`` over each head's V channels: o, z [B, T, H, V] -> [B, T, H, V] (z's dtype)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, o: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        o32 = o.float()
        normed = (o32 * torch.rsqrt(o32.pow(2).mean(-1, keepdim=True) + self.eps)).to(z.dtype)
        return (self.weight * normed * F.silu(z.float())).to(z.dtype)


@dataclass
class GatedDeltaInputs:
    qkv_raw: torch.Tensor  # [B, T, 2 Hk K + H V] projections before the conv (strict mode re-convolves them)
    z: torch.Tensor  # [B, T, H, V] output gate
    q: torch.Tensor  # [B, T, H, K] fp32, l2-normalised / sqrt(K), repeated for the value heads
    k: torch.Tensor  # [B, T, H, K] fp32, l2-normalised, repeated for the value heads
    v: torch.Tensor  # [B, T, H, V] fp32
    log_gate: torch.Tensor  # [B, T, H] fp32, g <= 0
    beta: torch.Tensor  # [B, T, H] fp32, in (0, 1) (or (0, 2) with beta_scale 2)


class GatedDeltaNet(TokenMixer):
    """The gated delta rule mixer; each value head is a feature (subclasses own the input projections).

    Knockout modes (see ``delta_rule``): zero-attention is the write-only reading (A[t, s] = 0: the source's
    erasure of earlier memory stays), write-and-erase sets beta_s = 0 for the target, zero-delta also drops
    the source's gate (its step is skipped). Strict also removes the blocked sources from the short conv.
    """

    kind = MixerKind.GATED_DELTA
    feature_name = "head"
    knockout_modes = frozenset({KnockoutMode.ZERO_ATTENTION, KnockoutMode.WRITE_AND_ERASE, KnockoutMode.ZERO_DELTA})
    supports_strict = True

    def __init__(self, config: PretrainedConfig, norm_eps: float | None = None, beta_scale: float = 1.0) -> None:
        """``norm_eps``: the output norm's (default: ``rms_norm_eps``); ``beta_scale``: beta = scale * sigmoid(b)
        (2 lets the transition's eigenvalues go negative, as OLMo-Hybrid's ``allow_neg_eigval``)."""
        super().__init__()
        self.beta_scale = beta_scale
        self.n_features = heads = config.linear_num_value_heads
        self.n_key_heads, self.key_dim, self.value_dim = (
            config.linear_num_key_heads,
            config.linear_key_head_dim,
            config.linear_value_head_dim,
        )
        kernel = config.linear_conv_kernel_dim
        self.conv_dim = conv_dim = 2 * self.n_key_heads * self.key_dim + heads * self.value_dim
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, kernel, groups=conv_dim, padding=kernel - 1, bias=False)
        self.dt_bias = nn.Parameter(torch.ones(heads))
        self.A_log = nn.Parameter(torch.zeros(heads))
        self.norm = GatedHeadNorm(self.value_dim, config.rms_norm_eps if norm_eps is None else norm_eps)
        self.out_proj = nn.Linear(heads * self.value_dim, config.hidden_size, bias=False)

    @abstractmethod
    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """hidden [B, T, D] -> qkv_raw [B, T, 2 Hk K + H V] (q, k, v before the conv), z [B, T, H, V],
        b, a [B, T, H]."""

    def delta_inputs(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """qkv = silu(conv(qkv_raw)) [B, T, 2 Hk K + H V] -> q, k [B, T, H, K] (normalised), v [B, T, H, V]."""
        key_width = self.n_key_heads * self.key_dim
        q, k, v = torch.split(qkv, [key_width, key_width, self.n_features * self.value_dim], dim=-1)
        per_key_head = self.n_features // self.n_key_heads
        q, k = (x.unflatten(-1, (self.n_key_heads, self.key_dim)).repeat_interleave(per_key_head, 2) for x in (q, k))
        q, k = delta_rule.normalize_qk(q, k)
        return q, k, v.unflatten(-1, (self.n_features, self.value_dim)).float()

    def inputs(
        self, qkv_raw: torch.Tensor, qkv: torch.Tensor, z: torch.Tensor, b: torch.Tensor, a: torch.Tensor
    ) -> GatedDeltaInputs:
        """Prepared inputs from the projections and the conv output ``qkv`` = silu(conv(qkv_raw))."""
        q, k, v = self.delta_inputs(qkv)
        log_gate = -self.A_log.float().exp() * F.softplus(a.float() + self.dt_bias.float())  # [B, T, H]
        return GatedDeltaInputs(qkv_raw, z, q, k, v, log_gate, self.beta_scale * torch.sigmoid(b.float()))

    def prepare(self, hidden: torch.Tensor) -> GatedDeltaInputs:
        qkv_raw, z, b, a = self.projections(hidden)
        return self.inputs(qkv_raw, silu_conv(qkv_raw, self.conv1d), z, b, a)

    def prepare_tail(
        self, hidden_tail: torch.Tensor, prefix: GatedDeltaInputs, start: int, rows: TailRows
    ) -> GatedDeltaInputs:
        qkv_raw, z, b, a = self.projections(hidden_tail)
        return self.inputs(qkv_raw, tail_silu_conv(prefix.qkv_raw, qkv_raw, start, self.conv1d, rows), z, b, a)

    def mix(self, p: GatedDeltaInputs) -> torch.Tensor:
        return delta_rule.chunked(p.q, p.k, p.v, p.log_gate, p.beta, CHUNK_SIZE)

    def terms(
        self,
        p: GatedDeltaInputs,
        blocked: torch.Tensor | None = None,
        mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION,
        strict: bool = False,
        rows: torch.Tensor | None = None,
    ) -> MixingTerms:
        rows = torch.arange(p.q.shape[1], device=p.q.device) if rows is None else rows
        q, k, v = p.q, p.k, p.v
        sources = blocked_sources(blocked)
        if strict and sources is not None:  # blocked sources never reach the conv either (a, b bypass it)
            q, k, v = self.delta_inputs(silu_conv(remove_positions(p.qkv_raw, sources), self.conv1d))
        matrix = delta_rule.knockout_hidden_attention(q, k, p.log_gate, p.beta, blocked, mode, rows)
        return MixingTerms(matrix=matrix, values=v, skip=v.new_zeros(v.shape[0], len(rows), *v.shape[2:]))

    def project(self, mixed: torch.Tensor, p: GatedDeltaInputs) -> torch.Tensor:
        return self.out_proj(self.norm(mixed.to(p.z.dtype), p.z).flatten(2))

    def decay_norms(self) -> torch.Tensor:
        return torch.exp(-torch.exp(self.A_log.float()))  # [H], the gate at softplus(a + dt_bias) = 1


class FusedGatedDeltaNet(GatedDeltaNet):
    """Qwen3-Next's projections: fused, laid out per key head as [q, k, v of its value heads, z of them] and
    [b, a of its value heads]."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        heads, d_model = self.n_features, config.hidden_size
        self.in_proj_qkvz = nn.Linear(d_model, self.conv_dim + heads * self.value_dim, bias=False)
        self.in_proj_ba = nn.Linear(d_model, 2 * heads, bias=False)

    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        per_key_head = self.n_features // self.n_key_heads  # value heads per key head
        qkvz = self.in_proj_qkvz(hidden).unflatten(-1, (self.n_key_heads, -1))  # [B, T, Hk, ...]
        widths = [self.key_dim, self.key_dim, per_key_head * self.value_dim, per_key_head * self.value_dim]
        q, k, v, z = torch.split(qkvz, widths, dim=-1)
        b, a = torch.split(self.in_proj_ba(hidden).unflatten(-1, (self.n_key_heads, -1)), per_key_head, dim=-1)
        qkv_raw = torch.cat([q.flatten(2), k.flatten(2), v.flatten(2)], dim=-1)
        return qkv_raw, z.flatten(2).unflatten(-1, (self.n_features, -1)), b.flatten(2), a.flatten(2)


@dataclass
class GatedAttentionInputs(AttentionInputs):
    gate: torch.Tensor  # [B, T, H * P] output gate before the sigmoid


class HybridAttention(RotaryAttention):
    """The softmax attention of the hybrid families: optional RMSNorms on q and k (per head, or over all heads
    with ``norm_over_heads``; before rotary), rotary on the first channels of a head (``rotary`` None: no
    positions), an optional sliding window, and optionally a sigmoid output gate per channel,
    ``o_proj(attn * sigmoid(gate))``, the gate read from the q projection (per head: [query, gate])."""

    def __init__(
        self,
        config: PretrainedConfig,
        rotary: Rotary | None,
        norm: Callable[[int], nn.Module] | None,
        output_gate: bool,
        bias: bool = False,
        norm_over_heads: bool = False,
        sliding_window: int | None = None,
        out_bias: bool | None = None,
    ) -> None:
        """``bias``: of the q, k, v projections (and of o_proj unless ``out_bias`` says otherwise)."""
        n_heads, n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        super().__init__(n_heads, n_kv_heads, head_dim, head_dim**-0.5, sliding_window)
        self.rotary, self.output_gate = rotary, output_gate
        d_model = config.hidden_size
        self.q_proj = nn.Linear(d_model, (2 if output_gate else 1) * n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias if out_bias is None else out_bias)
        self.norm_over_heads = norm_over_heads  # one norm over all heads' channels (OLMo) instead of per head
        self.q_norm = None if norm is None else norm(n_heads * head_dim if norm_over_heads else head_dim)
        self.k_norm = None if norm is None else norm(n_kv_heads * head_dim if norm_over_heads else head_dim)

    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError("HybridAttention computes its heads (and output gate) in heads()")

    def heads(self, hidden: torch.Tensor, start: int) -> AttentionInputs:
        """Normed, rotated heads of ``hidden`` [B, T, D] at positions start..start+T-1."""
        q, gate = self.q_proj(hidden).unflatten(-1, (self.n_features, -1)), None
        if self.output_gate:
            q, gate = q.chunk(2, dim=-1)
        k, v = (proj(hidden).unflatten(-1, (self.n_kv_heads, self.head_dim)) for proj in (self.k_proj, self.v_proj))
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.normed(q, self.q_norm), self.normed(k, self.k_norm)
        if self.rotary is not None:
            q, k = (self.rotate(x, start) for x in (q, k))
        if gate is None:
            return AttentionInputs(q=q, k=k, v=v)
        return GatedAttentionInputs(q=q, k=k, v=v, gate=gate.flatten(2))

    def normed(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """x [B, T, H, P] normed per head, or over all H P channels at once with ``norm_over_heads``."""
        return norm(x.flatten(-2)).view_as(x) if self.norm_over_heads else norm(x)

    def rotate(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x [B, T, H, P] at positions start..start+T-1, rotated on its first R = 2 len(inv_freq) channels."""
        assert self.rotary is not None
        cos, sin = (c[:, None] for c in self.rotary.cos_sin(start, start + x.shape[1], x))  # [T, 1, R]
        return self.rotary.rotate(x, cos, sin)

    def project(self, mixed: torch.Tensor, p: AttentionInputs) -> torch.Tensor:
        y = mixed.flatten(2).to(p.v.dtype)
        return self.o_proj(y * torch.sigmoid(p.gate) if isinstance(p, GatedAttentionInputs) else y)


class SharedExpert(nn.Module):
    """Qwen3-Next's shared expert, gated per position: ``sigmoid(g . x) shared(x)``."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        d_model = config.hidden_size
        self.shared_expert = GatedMLP(d_model, config.shared_expert_intermediate_size, config.hidden_act, False)
        self.shared_expert_gate = nn.Linear(d_model, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)


def sparse_moe(config: PretrainedConfig) -> MoE:
    """Top-k routed SwiGLU experts plus the shared expert: ``sum_top-k p_e expert_e(x) + sigmoid(g . x)
    shared(x)``, p the router's softmax (renormalised over the top k with ``norm_topk_prob``)."""
    d_model, n_experts = config.hidden_size, config.num_experts
    renormalize = getattr(config, "norm_topk_prob", True)
    router = Router(d_model, n_experts, config.num_experts_per_tok, Routing.SOFTMAX_THEN_TOPK, renormalize=renormalize)
    experts = Experts(n_experts, d_model, config.moe_intermediate_size, config.hidden_act, gated=True)
    return MoE(router, experts, SharedExpert(config))


def is_sparse(config: PretrainedConfig, layer: int) -> bool:
    """transformers' rule: MoE every ``decoder_sparse_step`` layers, except ``mlp_only_layers``."""
    return (
        layer not in (getattr(config, "mlp_only_layers", None) or [])
        and getattr(config, "num_experts", 0) > 0
        and (layer + 1) % getattr(config, "decoder_sparse_step", 1) == 0
    )


def mlp(config: PretrainedConfig, layer: int) -> nn.Module:
    if is_sparse(config, layer):
        return sparse_moe(config)
    return GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act, False)


def mixer(config: PretrainedConfig, layer: int, rotary: Rotary, delta_net: type[GatedDeltaNet]) -> TokenMixer:
    kind = config.layer_types[layer]
    if kind == "linear_attention":
        return delta_net(config)
    if kind == "full_attention":
        norm = partial(OffsetRMSNorm, eps=config.rms_norm_eps)
        return HybridAttention(config, rotary, norm, output_gate=True, bias=config.attention_bias)
    raise ValueError(f"layer {layer} has layer type {kind!r}; expected linear_attention or full_attention")


def build(config: PretrainedConfig) -> CausalLM:
    """A Qwen3-Next model from a transformers ``Qwen3NextConfig``."""
    return build_hybrid(config, "qwen3_next", FusedGatedDeltaNet)


def build_hybrid(config: PretrainedConfig, family: str, delta_net: type[GatedDeltaNet]) -> CausalLM:
    """Gated DeltaNet and gated attention layers (by ``layer_types``), MoE or dense MLPs, offset norms."""
    rotary = Rotary(config, config.head_dim)  # over the first partial_rotary_factor of each head's channels
    d_model, eps = config.hidden_size, config.rms_norm_eps
    blocks = [
        Block(
            OffsetRMSNorm(d_model, eps),
            mixer(config, layer, rotary, delta_net),
            OffsetRMSNorm(d_model, eps),
            mlp(config, layer),
        )
        for layer in range(config.num_hidden_layers)
    ]
    return CausalLM(
        family=family,
        embed=nn.Embedding(config.vocab_size, d_model),
        blocks=blocks,
        final_norm=OffsetRMSNorm(d_model, eps),
        lm_head=nn.Linear(d_model, config.vocab_size, bias=False),
    )


rename = renamer(
    (
        (r"^model\.embed_tokens\.", "embed."),
        (r"^model\.layers\.(\d+)\.input_layernorm\.", r"blocks.\1.mixer_norm."),
        (r"^model\.layers\.(\d+)\.(self_attn|linear_attn)\.", r"blocks.\1.mixer."),
        (r"^model\.layers\.(\d+)\.post_attention_layernorm\.", r"blocks.\1.mlp_norm."),
        (r"^model\.layers\.(\d+)\.mlp\.gate\.", r"blocks.\1.mlp.router."),  # the router of an MoE layer
        (r"^model\.layers\.(\d+)\.mlp\.experts\.gate_up_proj$", r"blocks.\1.mlp.experts.up_proj"),
        (r"^model\.layers\.(\d+)\.mlp\.shared_expert", r"blocks.\1.mlp.shared.shared_expert"),
        (r"^model\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
        (r"^model\.norm\.", "final_norm."),
    )
)


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours, experts stacked; the multi-token-prediction head (``mtp.*``) is not part
    of the LM."""
    language_model = {k: v for k, v in state_dict.items() if not k.startswith("mtp.")}
    return rename(stack_experts(language_model, {"up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}))
