"""Mamba-2 (SSD: structured state-space duality, one scalar decay per head h).

With x, B, C the conv outputs (heads share B and C within a group), Delta = softplus(dt + dt_bias) clamped to
``time_step_limit`` and a_h = -exp(A_log[h]):

    h[t, h]  = exp(Delta[t, h] a_h) h[t-1, h] + Delta[t, h] x[t, h] B[t, g(h)]^T     state [P, N] per head
    y[t, h]  = h[t, h] C[t, g(h)] + D_h x[t, h]

which is the hidden attention
    M_h[t, s] = (C[t, g(h)] . B[s, g(h)]) exp(sum_{r=s+1..t} Delta[r, h] a_h)        (s <= t)
    y[t, h]   = sum_{s<=t} M_h[t, s] Delta[s, h] x[s, h] + D_h x[t, h].
The mixer output is out_proj(norm(y * silu(z))), a gated RMSNorm over groups of ``norm_group_size`` channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from infoflow.models import mamba1
from infoflow.models.base import Block, CausalLM, MixingTerms, RMSNorm, TokenMixer
from infoflow.models.modes import KnockoutMode, MixerKind
from infoflow.models.ssm import blocked_sources, remove_positions, segsum, silu_conv, tail_silu_conv
from infoflow.models.tails import TailRows


class GatedRMSNorm(nn.Module):
    """``w * g / rms(g)`` with ``g = y * silu(z)`` (fp32), the rms taken over each group of ``group_size`` channels;
    with ``norm_before_gate`` (Falcon-H1) ``(w * y / rms(y)) * silu(z)`` instead."""

    def __init__(self, dim: int, eps: float, group_size: int, norm_before_gate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps, self.group_size, self.norm_before_gate = eps, group_size, norm_before_gate

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y, z [B, T, Di] -> [B, T, Di] fp32."""
        gated = y.float() if self.norm_before_gate else y.float() * F.silu(z.float())
        groups = gated.unflatten(-1, (-1, self.group_size))  # [B, T, Di / group, group]
        normed = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)
        out = self.weight.float() * normed.flatten(-2)
        return out * F.silu(z.float()) if self.norm_before_gate else out


@dataclass
class Mamba2Inputs:
    xBC_raw: torch.Tensor  # [B, T, Di + 2 G N] in_proj output before the conv (strict mode re-convolves it)
    z: torch.Tensor  # [B, T, Di] gate
    x: torch.Tensor  # [B, T, H, P] fp32
    delta: torch.Tensor  # [B, T, H] fp32, clamp(softplus(dt + dt_bias))
    B: torch.Tensor  # [B, T, H, N] fp32, the group's B repeated for each of its heads
    C: torch.Tensor  # [B, T, H, N] fp32


class Mamba2Mixer(TokenMixer):
    kind = MixerKind.SSD
    feature_name = "head"
    knockout_modes = frozenset({KnockoutMode.ZERO_ATTENTION, KnockoutMode.ZERO_DELTA})
    supports_strict = True

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int,
        d_state: int,
        n_groups: int,
        d_conv: int,
        conv_bias: bool,
        proj_bias: bool,
        norm_eps: float,
        norm_group_size: int,
        time_step_limit: tuple[float, float],
        chunk_size: int,
    ) -> None:
        super().__init__()
        self.n_features = n_heads
        self.head_dim, self.d_state, self.n_groups = head_dim, d_state, n_groups
        self.d_inner = n_heads * head_dim
        self.conv_dim = conv_dim = self.d_inner + 2 * n_groups * d_state  # x, B, C go through the conv
        self.time_step_limit, self.chunk_size = time_step_limit, chunk_size
        self.in_proj = nn.Linear(d_model, self.d_inner + conv_dim + n_heads, bias=proj_bias)  # [z, xBC, dt]
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=conv_bias)
        self.dt_bias = nn.Parameter(torch.zeros(n_heads))
        self.A_log = nn.Parameter(torch.zeros(n_heads))
        self.D = nn.Parameter(torch.ones(n_heads))
        self.norm = GatedRMSNorm(self.d_inner, norm_eps, norm_group_size)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=proj_bias)

    @property
    def A(self) -> torch.Tensor:
        return -torch.exp(self.A_log.float())  # [H]

    def conv_inputs(self, xBC_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """xBC_raw [B, T, Di + 2 G N] -> x [B, T, H, P], B [B, T, H, N], C [B, T, H, N] (fp32)."""
        return self.split_heads(silu_conv(xBC_raw, self.conv1d))

    def split_heads(self, xBC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """xBC = silu(conv(xBC_raw)) [B, T, Di + 2 G N] -> x [B, T, H, P], B, C [B, T, H, N] (fp32)."""
        x, B, C = torch.split(
            xBC.float(), [self.d_inner, self.n_groups * self.d_state, self.n_groups * self.d_state], dim=-1
        )
        heads_per_group = self.n_features // self.n_groups
        B, C = (
            v.unflatten(-1, (self.n_groups, self.d_state)).repeat_interleave(heads_per_group, dim=2) for v in (B, C)
        )
        return x.unflatten(-1, (self.n_features, self.head_dim)), B, C

    def in_projection(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, D] -> [z, xBC_raw, dt] [B, T, Di + (Di + 2 G N) + H]."""
        return self.in_proj(hidden)

    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hidden [B, T, D] -> z [B, T, Di], xBC_raw [B, T, Di + 2 G N], Delta [B, T, H] (fp32)."""
        z, xBC_raw, dt = torch.split(self.in_projection(hidden), [self.d_inner, self.conv_dim, self.n_features], dim=-1)
        delta = F.softplus(dt.float() + self.dt_bias.float()).clamp(*self.time_step_limit)
        return z, xBC_raw, delta

    def prepare(self, hidden: torch.Tensor) -> Mamba2Inputs:
        z, xBC_raw, delta = self.projections(hidden)
        x, B, C = self.conv_inputs(xBC_raw)
        return Mamba2Inputs(xBC_raw=xBC_raw, z=z, x=x, delta=delta, B=B, C=C)

    def prepare_tail(self, hidden_tail: torch.Tensor, prefix: Mamba2Inputs, start: int, rows: TailRows) -> Mamba2Inputs:
        z, xBC_raw, delta = self.projections(hidden_tail)
        x, B, C = self.split_heads(tail_silu_conv(prefix.xBC_raw, xBC_raw, start, self.conv1d, rows))
        return Mamba2Inputs(xBC_raw=xBC_raw, z=z, x=x, delta=delta, B=B, C=C)

    def mix(self, p: Mamba2Inputs) -> torch.Tensor:
        """Chunked SSD (as ``ssd_minimal``): exact quadratic form within chunks, a scan over chunk states."""
        seq_len = p.x.shape[1]
        chunk = min(self.chunk_size, seq_len)
        pad = -seq_len % chunk  # zero padding at the end: no input, decay exp(0) = 1, outputs cut off
        X, a, B, C = (  # X = Delta x, a = Delta a_h; split time into chunks c of length l
            F.pad(v, (0, 0) * (v.dim() - 2) + (0, pad)).unflatten(1, (-1, chunk))
            for v in (p.x * p.delta[..., None], p.delta * self.A, p.B, p.C)
        )  # X [B, c, l, H, P], a [B, c, l, H], B and C [B, c, l, H, N]
        a = a.permute(0, 3, 1, 2)  # [B, H, c, l]
        a_cumsum = torch.cumsum(a, dim=-1)
        # 1. within chunks: y[l] = sum_{s<=l} (C_l . B_s) exp(sum_{r=s+1..l} a_r) X_s
        y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, torch.exp(segsum(a)), X)
        # 2. state at the end of each chunk from its own inputs: [B, c, H, P, N]
        decay_to_end = torch.exp(a_cumsum[..., -1:] - a_cumsum)  # [B, H, c, l]
        states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, decay_to_end, X)
        # 3. scan over chunks: the state entering chunk c = sum_{c' < c} decay(c' -> c) states[c']
        states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)  # [B, c + 1, H, P, N]
        decay_chunk = torch.exp(segsum(F.pad(a_cumsum[..., -1], (1, 0))))  # [B, H, c + 1, c + 1]
        states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)[:, :-1]  # [B, c, H, P, N]
        # 4. contribution of the entering state: y[l] += exp(sum_{r<=l} a_r) C_l state
        y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states, torch.exp(a_cumsum))
        y = (y_diag + y_off).flatten(1, 2)[:, :seq_len]  # [B, T, H, P]
        return y + p.x * self.D.float()[:, None]

    def terms(
        self,
        p: Mamba2Inputs,
        blocked: torch.Tensor | None = None,
        mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION,
        strict: bool = False,
        rows: torch.Tensor | None = None,
    ) -> MixingTerms:
        rows = torch.arange(p.x.shape[1], device=p.x.device) if rows is None else rows
        sources = blocked_sources(blocked)  # [B, T]
        x, delta, B, C = p.x, p.delta, p.B, p.C
        if strict and sources is not None:  # blocked sources never reach the conv either (dt bypasses the conv)
            x, B, C = self.conv_inputs(remove_positions(p.xBC_raw, sources))
        if mode is KnockoutMode.ZERO_DELTA and sources is not None:  # no input and no decay at sources
            delta = remove_positions(delta, sources)
        # M[b, h, r, s] = (C[b, t, h] . B[b, s, h]) exp(sum_{q=s+1..t} Delta[b, q, h] a_h), t = rows[r]
        log_decay = segsum((delta * self.A).transpose(1, 2), rows)  # [B, H, R, T]
        matrix = torch.einsum("brhn,bshn->bhrs", C[:, rows], B) * torch.exp(log_decay)
        if blocked is not None:
            matrix = matrix.masked_fill(blocked[:, None, rows], 0.0)
        values = x * delta[..., None]  # [B, T, H, P]: Delta[s, h] x[s, h]
        skip = x[:, rows] * self.D.float()[:, None]
        return MixingTerms(matrix=matrix, values=values, skip=skip)

    def project(self, mixed: torch.Tensor, p: Mamba2Inputs) -> torch.Tensor:
        return self.out_proj(self.norm(mixed.flatten(2), p.z).to(p.z.dtype))

    def decay_norms(self) -> torch.Tensor:
        return torch.exp(-torch.exp(self.A_log.float()))  # [H], decay per step at Delta = 1


def build(config: PretrainedConfig) -> CausalLM:
    """A Mamba-2 model from a transformers ``Mamba2Config``.

    transformers normalises the gated output over all ``Di`` channels at once; mamba_ssm (the original
    checkpoints) over each of the ``n_groups`` groups. A config may carry ``norm_group_size`` (the
    state-spaces loader sets ``Di / n_groups``); without it we follow transformers. Both agree for one group.
    """
    d_inner = config.num_heads * config.head_dim
    blocks = [
        Block(
            RMSNorm(config.hidden_size, config.layer_norm_epsilon),
            Mamba2Mixer(
                d_model=config.hidden_size,
                n_heads=config.num_heads,
                head_dim=config.head_dim,
                d_state=config.state_size,
                n_groups=config.n_groups,
                d_conv=config.conv_kernel,
                conv_bias=config.use_conv_bias,
                proj_bias=config.use_bias,
                norm_eps=config.layer_norm_epsilon,
                norm_group_size=getattr(config, "norm_group_size", d_inner),
                time_step_limit=(float(config.time_step_limit[0]), float(config.time_step_limit[1])),
                chunk_size=config.chunk_size,
            ),
        )
        for _ in range(config.num_hidden_layers)
    ]
    return CausalLM(
        family="mamba2",
        embed=nn.Embedding(config.vocab_size, config.hidden_size),
        blocks=blocks,
        final_norm=RMSNorm(config.hidden_size, config.layer_norm_epsilon),
        lm_head=nn.Linear(config.hidden_size, config.vocab_size, bias=False),
    )


# transformers' Mamba-2 checkpoints use Mamba-1's parameter names around the mixer
convert_state_dict = mamba1.convert_state_dict
