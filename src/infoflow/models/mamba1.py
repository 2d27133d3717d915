"""Mamba-1 and Falcon-Mamba (selective scan, one decay per channel d and state n).

Per channel d and state n, with x the conv output, Delta = softplus(dt_proj(dt)), A = -exp(A_log):

    Abar[t, d, n] = exp(Delta[t, d] A[d, n])
    h[t, d, n]    = Abar[t, d, n] h[t-1, d, n] + Delta[t, d] B[t, n] x[t, d]
    y[t, d]       = sum_n C[t, n] h[t, d, n] + D[d] x[t, d]

which is the hidden attention
    alpha[t, s, d] = sum_n C[t, n] exp(sum_{r=s+1..t} Delta[r, d] A[d, n]) Delta[s, d] B[s, n]
    y[t, d]        = sum_{s<=t} alpha[t, s, d] x[s, d] + D[d] x[t, d].
The mixer output is out_proj(y * silu(z)). Falcon-Mamba RMS-normalises dt, B and C (no weights); Jamba
with learned weights (``dt_layernorm``, ``b_layernorm``, ``c_layernorm``), before dt_proj.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from infoflow.models.base import Block, CausalLM, MixingTerms, RMSNorm, TokenMixer
from infoflow.models.decode_readout import decayed_readout
from infoflow.models.families import renamer
from infoflow.models.modes import KnockoutMode, MixerKind
from infoflow.models.ssm import (
    blocked_sources,
    remove_positions,
    segsum,
    silu_conv,
    tail_silu_conv,
    weightless_rms_norm,
)
from infoflow.models.tails import TailRows

SCAN_CHUNK = 512  # scan steps whose [B, l, Di, N] decays and inputs the clean scan holds at once


@dataclass
class Mamba1Inputs:
    x_raw: torch.Tensor  # [B, T, Di] in_proj output before the conv (strict mode re-convolves it)
    z: torch.Tensor  # [B, T, Di] gate
    x: torch.Tensor  # [B, T, Di] silu(conv(x_raw))
    delta: torch.Tensor  # [B, T, Di] fp32, softplus(dt_proj(dt))
    B: torch.Tensor  # [B, T, N]
    C: torch.Tensor  # [B, T, N]


class Mamba1Mixer(TokenMixer):
    kind = MixerKind.SELECTIVE_SCAN
    feature_name = "channel"
    knockout_modes = frozenset({KnockoutMode.ZERO_ATTENTION, KnockoutMode.ZERO_DELTA})
    supports_strict = True

    def __init__(
        self,
        d_model: int,
        d_inner: int,
        d_state: int,
        dt_rank: int,
        d_conv: int,
        conv_bias: bool,
        proj_bias: bool,
        bc_dt_norm_eps: float | None = None,
        weighted_norm_eps: float | None = None,
    ) -> None:
        super().__init__()
        self.n_features = d_inner
        self.d_state, self.dt_rank = d_state, dt_rank
        self.bc_dt_norm_eps = bc_dt_norm_eps  # Falcon-Mamba: RMS-normalise dt, B, C
        self.weighted_norms = weighted_norm_eps is not None  # Jamba: the same with learned weights
        if weighted_norm_eps is not None:
            self.dt_layernorm = RMSNorm(dt_rank, weighted_norm_eps)
            self.b_layernorm = RMSNorm(d_state, weighted_norm_eps)
            self.c_layernorm = RMSNorm(d_state, weighted_norm_eps)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=proj_bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.zeros(d_inner, d_state))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=proj_bias)

    def selective_inputs(self, x_raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x_raw [B, T, Di] -> x [B, T, Di], Delta [B, T, Di] (fp32), B [B, T, N], C [B, T, N]."""
        return self.selective_projections(silu_conv(x_raw, self.conv1d))

    def selective_projections(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x = silu(conv(x_raw)) [B, T, Di] -> x, Delta (fp32), B, C."""
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        if self.bc_dt_norm_eps is not None:
            dt, B, C = (weightless_rms_norm(v, self.bc_dt_norm_eps) for v in (dt, B, C))
        if self.weighted_norms:
            dt, B, C = self.dt_layernorm(dt), self.b_layernorm(B), self.c_layernorm(C)
        delta = F.softplus(dt @ self.dt_proj.weight.T + self.dt_proj.bias.float())
        return x, delta.float(), B, C

    def prepare(self, hidden: torch.Tensor) -> Mamba1Inputs:
        x_raw, z = self.in_proj(hidden).chunk(2, dim=-1)
        x, delta, B, C = self.selective_inputs(x_raw)
        return Mamba1Inputs(x_raw=x_raw, z=z, x=x, delta=delta, B=B, C=C)

    @property
    def A(self) -> torch.Tensor:
        return -torch.exp(self.A_log.float())  # [Di, N]

    def mix(self, p: Mamba1Inputs) -> torch.Tensor:
        """Sequential selective scan (fp32 state), as transformers' reference path: [B, T, Di, 1]. The decays
        and inputs [B, l, Di, N] are formed ``SCAN_CHUNK`` steps at a time, so memory is linear in T with a
        small factor (the same numbers as forming them all at once)."""
        state = torch.zeros(p.x.shape[0], *self.A.shape, device=p.x.device)  # [B, Di, N] fp32
        outputs = []
        for first in range(0, p.x.shape[1], SCAN_CHUNK):
            steps = slice(first, first + SCAN_CHUNK)
            delta = p.delta[:, steps, :, None]  # [B, l, Di, 1]
            A_bar = torch.exp(delta * self.A)  # [B, l, Di, N]
            Bx = delta * p.B[:, steps].float()[:, :, None, :] * p.x[:, steps].float()[..., None]  # [B, l, Di, N]
            for t in range(A_bar.shape[1]):
                state = A_bar[:, t] * state + Bx[:, t]
                outputs.append(torch.matmul(state.to(p.x.dtype), p.C[:, first + t, :, None])[..., 0])  # [B, Di]
        y = torch.stack(outputs, dim=1) + p.x * self.D.float()
        return y[..., None]

    def terms(
        self,
        p: Mamba1Inputs,
        blocked: torch.Tensor | None = None,
        mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION,
        strict: bool = False,
        rows: torch.Tensor | None = None,
    ) -> MixingTerms:
        rows = torch.arange(p.x.shape[1], device=p.x.device) if rows is None else rows
        sources = blocked_sources(blocked)  # [B, T]
        x, delta, B, C = p.x, p.delta, p.B, p.C
        if strict and sources is not None:  # blocked sources never reach the conv either
            x, delta, B, C = self.selective_inputs(remove_positions(p.x_raw, sources))
        if mode is KnockoutMode.ZERO_DELTA and sources is not None:  # no input and no decay at sources
            delta = remove_positions(delta, sources)
        # log_decay[b, d, n, r, s] = sum_{q=s+1..t} Delta[b, q, d] A[d, n], t = rows[r]
        log_decay = segsum((delta[..., None] * self.A).permute(0, 2, 3, 1), rows)  # [B, Di, N, R, T]
        # alpha[b, d, r, s] = sum_n C[b, t, n] exp(log_decay) Delta[b, s, d] B[b, s, n]
        alpha = torch.einsum("brn,bdnrs,bsn->bdrs", C[:, rows].float(), torch.exp(log_decay), B.float())
        alpha = alpha * delta.transpose(1, 2)[:, :, None, :]
        if blocked is not None:
            alpha = alpha.masked_fill(blocked[:, None, rows], 0.0)
        values = x.float()[..., None]  # [B, T, Di, 1]
        skip = values[:, rows] * self.D.float()[:, None]
        return MixingTerms(matrix=alpha, values=values, skip=skip)

    def prepare_tail(self, hidden_tail: torch.Tensor, prefix: Mamba1Inputs, start: int, rows: TailRows) -> Mamba1Inputs:
        x_raw_tail, z_tail = self.in_proj(hidden_tail).chunk(2, dim=-1)
        x, delta, B, C = self.selective_projections(tail_silu_conv(prefix.x_raw, x_raw_tail, start, self.conv1d, rows))
        return Mamba1Inputs(x_raw=x_raw_tail, z=z_tail, x=x, delta=delta, B=B, C=C)

    def mix_last_row(
        self, prefix: Mamba1Inputs, tail: Mamba1Inputs, blocked_row: torch.Tensor, rows: TailRows
    ) -> torch.Tensor:
        """A decode step from the clean state with the blocked sources' contributions left out: [A, Di, 1].

        c[s] = (prod_{r=s+1..T-2} Abar[r]) Delta[s] B[s] x[s] is source s's part of the clean state after
        step T-2 (per prompt, from its clean run); row a keeps h_a = sum_{s kept} c[s] of its prompt, and

            y = C . (Abar_a[T-1] h_a + [T-1 kept] Delta_a B_a x_a) + D x_a
              = sum_n C_n Abar_a[T-1, n] h_a[n] + [T-1 kept] Delta_a x_a (C . B) + D x_a.

        The [Di, N] states live only in the padded layout [P, M, Di, N] of ``rows`` (one batched matmul).
        """
        last = blocked_row.shape[-1] - 1
        delta, x, B = prefix.delta[:, :last], prefix.x[:, :last].float(), prefix.B[:, :last].float()  # [P, T-1, .]
        # prod_{r=s+1..T-2} Abar[r] = exp(A sum_{r=s+1..T-2} Delta[r]): suffix sums of Delta, 0 for s = T-2
        after = torch.cat([delta[:, 1:].flip(1).cumsum(1).flip(1), torch.zeros_like(delta[:, :1])], dim=1)[:, :last]
        # exp(after A) Delta[s] B[s] x[s] [P, T-1, Di, N], in place: two tensors of that size at most
        contributions = (after[..., None] * self.A).exp_()
        contributions.mul_((delta * x)[..., None] * B[:, :, None, :])
        kept = rows.pad((~blocked_row[:, :last]).to(contributions.dtype))  # [P, M, T-1]
        state = torch.bmm(kept, contributions.flatten(2))  # h [P, M, Di * N]
        delta_t, x_t = tail.delta[:, 0], tail.x[:, 0].float()  # [A, Di]
        B_t, C_t = tail.B[:, 0].float(), tail.C[:, 0].float()  # [A, N]
        # carried[a, d] = sum_n C[a, n] exp(Delta[a, d] A[d, n]) h[a, d, n], over the padded rows P * M
        n_padded = kept.shape[0] * kept.shape[1]
        state, delta_padded, C_padded = state.view(n_padded, *self.A.shape), rows.pad(delta_t), rows.pad(C_t)
        carried = decayed_readout(state, delta_padded.view(n_padded, -1), C_padded.view(n_padded, -1), self.A)
        carried = rows.unpad(carried.unflatten(0, kept.shape[:2]))  # [A, Di]
        own = (~blocked_row[:, last, None]) * delta_t * x_t * (C_t * B_t).sum(-1, keepdim=True)  # [A, Di]
        return (carried + own + x_t * self.D.float())[..., None]

    def project(self, mixed: torch.Tensor, p: Mamba1Inputs) -> torch.Tensor:
        return self.out_proj((mixed[..., 0] * F.silu(p.z.float())).to(p.z.dtype))

    def decay_norms(self) -> torch.Tensor:
        return torch.exp(-torch.exp(self.A_log.float())).abs().sum(-1)  # [Di]


def build(config: PretrainedConfig) -> CausalLM:
    """A Mamba-1 (``model_type`` mamba) or Falcon-Mamba (falcon_mamba) model from a transformers config."""
    falcon = config.model_type == "falcon_mamba"
    blocks = [
        Block(
            RMSNorm(config.hidden_size, config.layer_norm_epsilon),
            Mamba1Mixer(
                d_model=config.hidden_size,
                d_inner=config.intermediate_size,
                d_state=config.state_size,
                dt_rank=int(config.time_step_rank),
                d_conv=config.conv_kernel,
                conv_bias=config.use_conv_bias,
                proj_bias=config.use_bias,
                bc_dt_norm_eps=config.mixer_rms_eps if falcon else None,
            ),
        )
        for _ in range(config.num_hidden_layers)
    ]
    return CausalLM(
        family="falcon_mamba" if falcon else "mamba1",
        embed=nn.Embedding(config.vocab_size, config.hidden_size),
        blocks=blocks,
        final_norm=RMSNorm(config.hidden_size, config.layer_norm_epsilon),
        lm_head=nn.Linear(config.hidden_size, config.vocab_size, bias=False),
    )


# transformers' parameter names -> ours
convert_state_dict = renamer(
    (
        (r"^backbone\.embeddings\.", "embed."),
        (r"^backbone\.layers\.(\d+)\.norm\.", r"blocks.\1.mixer_norm."),
        (r"^backbone\.layers\.(\d+)\.mixer\.", r"blocks.\1.mixer."),
        (r"^backbone\.norm_f\.", "final_norm."),
    )
)
