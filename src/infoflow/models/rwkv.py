"""RWKV-4 (transformers' ``rwkv``): a time-mix (the WKV, RWKV's token mixer) and a channel-mix per layer.

Time-mix, per channel c of the attention width C, on x = ln1(h) and the token shift x[t-1] (0 before the prompt):

    mix_m[t]  = mu_m x[t] + (1 - mu_m) x[t-1]            m = key, value, receptance (mu per channel of D)
    k, v      = W_k mix_k, W_v mix_v                     r = sigmoid(W_r mix_r)
    wkv[t, c] = (sum_{s<t} e^{k_s - (t-1-s) w} v_s + e^{u + k_t} v_t) / (sum_{s<t} e^{k_s - (t-1-s) w} + e^{u + k_t})
    out       = W_o (r * wkv)                            w = exp(time_decay) > 0, u = time_first

The WKV is a ratio with a normaliser, and exactly a softmax over the positions s <= t (Zimerman et al. 2024):

    logit_c[t, s] = k[s, c] - (t - 1 - s) w_c   (s < t),     logit_c[t, t] = k[t, c] + u_c
    A_c[t, s]     = r[t, c] softmax_s(logit_c[t, :])[s]           r wkv[t, c] = sum_s A_c[t, s] v[s, c]

(the receptance r, a per-position gate, sits in the matrix so that a strict knockout can recompute it).
A knockout of t <- s removes the term s from the numerator and from the denominator (``zero-attention``, the
default: the row renormalises, as attention's softmax does; also named ``renormalize``) or from the numerator
only (``numerator-only``: the row keeps s's weight in its normaliser and so shrinks), or skips the step of s for
the target (``zero-delta``: s neither enters nor decays the state, so earlier sources are one step closer).
``strict`` also removes the blocked sources from the time-mix token shift (k, v and r are recomputed), as it
removes Mamba's conv taps.

Channel-mix (the MLP), on y = ln2(h) and its own token shift y[t-1]:
``sigmoid(W_r' mix_r'(y)) * W_v' relu(W_k' mix_k'(y))^2``. Its shift carries y[t-1] to t in every layer
(``RwkvBlock.mlp_lookback``); a knockout leaves it in place, and a strict one cuts it at t where t <- t-1 is
blocked (``LayerIntervention.mlp_cut``), so that strict leaves no path from a blocked source. The model embeds
with a LayerNorm (``pre_ln``), ends with ``ln_out`` and halves the residual stream after every
``rescale_every`` layers, with the output projections scaled to match (as transformers does in inference,
so that fp16 does not overflow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig

from infoflow.models.base import Block, CausalLM, MixingTerms, TokenMixer
from infoflow.models.families import StateDict, renamer
from infoflow.models.modes import KnockoutMode, MixerKind
from infoflow.models.ssm import blocked_sources, remove_positions
from infoflow.models.tails import TailRows


def token_shift(x: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, T, D] -> x[t-1] [B, T, D]: ``previous`` [B, 1, D] (the position before, default 0) at t = 0."""
    first = torch.zeros_like(x[:, :1]) if previous is None else previous
    return torch.cat([first, x[:, :-1]], dim=1)


def lerp(x: torch.Tensor, shifted: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """mu x[t] + (1 - mu) x[t-1], as transformers writes it."""
    return x * mu + shifted * (1 - mu)


def wkv_recurrence(
    time_decay: torch.Tensor, time_first: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """wkv [B, T, C] (fp32) by transformers' max-stabilised recurrence: k, v [B, T, C], time_decay and
    time_first [C] (w = exp(time_decay))."""
    decay, first = -torch.exp(time_decay.float()), time_first.float()
    k, v = k.float(), v.float()
    numerator = torch.zeros_like(k[:, 0])  # [B, C], scaled by exp(-biggest)
    denominator = torch.zeros_like(k[:, 0])
    biggest = torch.full_like(k[:, 0], -1e38)
    outputs = []
    for t in range(k.shape[1]):
        top = torch.maximum(biggest, k[:, t] + first)
        old, new = torch.exp(biggest - top), torch.exp(k[:, t] + first - top)
        outputs.append((old * numerator + new * v[:, t]) / (old * denominator + new))
        top = torch.maximum(biggest + decay, k[:, t])
        old, new = torch.exp(biggest + decay - top), torch.exp(k[:, t] - top)
        numerator, denominator, biggest = old * numerator + new * v[:, t], old * denominator + new, top
    return torch.stack(outputs, dim=1)


def wkv_logits(
    time_decay: torch.Tensor,
    time_first: torch.Tensor,
    k: torch.Tensor,
    rows: torch.Tensor,
    skipped: torch.Tensor | None = None,
) -> torch.Tensor:
    """logit [B, C, R, T] for output positions ``rows`` [R]: k[s] - (t-1-s) w (s < t), k[t] + u (s = t), -inf
    for s > t; k [B, T, C]. ``skipped`` [B, T] (zero-delta): steps that do not decay the state, so that
    k[s] - n w with n the steps r in (s, t-1] not skipped."""
    seq_len = k.shape[1]
    positions = torch.arange(seq_len, device=k.device)
    lag = rows[:, None] - positions[None, :]  # [R, T]: t - s
    steps = (lag - 1).float()[None].expand(k.shape[0], -1, -1)  # [B, R, T]: decay steps r in (s, t-1]
    if skipped is not None:
        done = skipped.float().cumsum(dim=1)  # [B, T]: skipped steps at or before each position
        before_row = done[:, (rows - 1).clamp(min=0)] * (rows > 0)  # [B, R]: skipped r <= t-1
        steps = steps - (before_row[:, :, None] - done[:, None, :])  # minus skipped r in (s, t-1]
    w, u = torch.exp(time_decay.float())[None, :, None, None], time_first.float()[None, :, None, None]
    offset = torch.where(lag == 0, u, -steps[:, None] * w)  # [B, C, R, T]
    offset = offset.masked_fill(lag < 0, float("-inf"))
    return k.float().transpose(1, 2)[:, :, None, :] + offset  # [B, C, R, T]


def wkv_weights(logits: torch.Tensor, blocked: torch.Tensor | None, renormalize: bool) -> torch.Tensor:
    """softmax_s(logits) [B, C, R, T] with ``blocked`` [B, R, T] terms removed: from numerator and denominator
    (``renormalize``; a row with no term left receives nothing) or from the numerator only."""
    if blocked is None:
        return torch.softmax(logits, dim=-1)
    blocked = blocked[:, None]  # [B, 1, R, T]
    if not renormalize:
        return torch.softmax(logits, dim=-1).masked_fill(blocked, 0.0)
    kept = logits.masked_fill(blocked, float("-inf"))
    weights = torch.softmax(kept, dim=-1)
    return torch.where(torch.isfinite(kept).any(dim=-1, keepdim=True), weights, 0.0)


@dataclass
class RwkvInputs:
    x: torch.Tensor  # [B, T, D] ln1(h): what the token shift mixes (strict mode re-shifts it)
    k: torch.Tensor  # [B, T, C] keys
    v: torch.Tensor  # [B, T, C] values
    r: torch.Tensor  # [B, T, C] receptance, sigmoid(W_r mix_r)


class TimeMix(TokenMixer):
    """RWKV-4's time-mix (the WKV with its token shift); each channel of the attention width is a feature."""

    kind = MixerKind.RWKV
    feature_name = "channel"
    knockout_modes = frozenset({KnockoutMode.ZERO_ATTENTION, KnockoutMode.NUMERATOR_ONLY, KnockoutMode.ZERO_DELTA})
    supports_strict = True

    def __init__(self, d_model: int, width: int, output_scale: float) -> None:
        super().__init__()
        self.n_features = width
        self.time_decay = nn.Parameter(torch.empty(width))
        self.time_first = nn.Parameter(torch.empty(width))
        self.time_mix_key = nn.Parameter(torch.empty(1, 1, d_model))
        self.time_mix_value = nn.Parameter(torch.empty(1, 1, d_model))
        self.time_mix_receptance = nn.Parameter(torch.empty(1, 1, d_model))
        self.key = nn.Linear(d_model, width, bias=False)
        self.value = nn.Linear(d_model, width, bias=False)
        self.receptance = nn.Linear(d_model, width, bias=False)
        self.output = nn.Linear(width, d_model, bias=False)
        self.output_scale = output_scale  # 2^-(layer // rescale_every): transformers' rescaled output weights

    def inputs(self, x: torch.Tensor, shifted: torch.Tensor) -> RwkvInputs:
        k = self.key(lerp(x, shifted, self.time_mix_key))
        v = self.value(lerp(x, shifted, self.time_mix_value))
        r = torch.sigmoid(self.receptance(lerp(x, shifted, self.time_mix_receptance)))
        return RwkvInputs(x=x, k=k, v=v, r=r)

    def prepare(self, hidden: torch.Tensor) -> RwkvInputs:
        return self.inputs(hidden, token_shift(hidden))

    def prepare_tail(self, hidden_tail: torch.Tensor, prefix: RwkvInputs, start: int, rows: TailRows) -> RwkvInputs:
        previous = rows.gather(prefix.x[:, start - 1 : start]) if start > 0 else None  # the clean x[start - 1]
        return self.inputs(hidden_tail, token_shift(hidden_tail, previous))

    def mix(self, p: RwkvInputs) -> torch.Tensor:
        """r * wkv by the recurrence, fp32: [B, T, C, 1]."""
        return (p.r.float() * wkv_recurrence(self.time_decay, self.time_first, p.k, p.v))[..., None]

    def terms(
        self,
        p: RwkvInputs,
        blocked: torch.Tensor | None = None,
        mode: KnockoutMode = KnockoutMode.ZERO_ATTENTION,
        strict: bool = False,
        rows: torch.Tensor | None = None,
    ) -> MixingTerms:
        rows = torch.arange(p.x.shape[1], device=p.x.device) if rows is None else rows
        sources = blocked_sources(blocked)
        if strict and sources is not None:  # blocked sources reach no position through the token shift
            p = self.inputs(p.x, token_shift(remove_positions(p.x, sources)))
        skipped = sources if mode is KnockoutMode.ZERO_DELTA else None
        logits = wkv_logits(self.time_decay, self.time_first, p.k, rows, skipped)
        renormalize = mode is not KnockoutMode.NUMERATOR_ONLY
        weights = wkv_weights(logits, None if blocked is None else blocked[:, rows], renormalize)
        matrix = p.r.float().transpose(1, 2)[:, :, rows, None] * weights  # A[b, c, r, s] = r[t, c] softmax[s]
        values = p.v.float()[..., None]  # [B, T, C, 1]
        return MixingTerms(matrix=matrix, values=values, skip=torch.zeros_like(values[:, rows]))

    def project(self, mixed: torch.Tensor, p: RwkvInputs) -> torch.Tensor:
        return self.output(mixed[..., 0].to(p.v.dtype) * self.output_scale)

    def decay_norms(self) -> torch.Tensor:
        return torch.exp(-torch.exp(self.time_decay.float()))  # [C], the per-step decay exp(-w)


class ChannelMix(nn.Module):
    """RWKV-4's channel-mix: ``sigmoid(W_r mix_r) * W_v relu(W_k mix_k)^2`` on y and its token shift y[t-1]."""

    def __init__(self, d_model: int, width: int, output_scale: float) -> None:
        super().__init__()
        self.time_mix_key = nn.Parameter(torch.empty(1, 1, d_model))
        self.time_mix_receptance = nn.Parameter(torch.empty(1, 1, d_model))
        self.key = nn.Linear(d_model, width, bias=False)
        self.receptance = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(width, d_model, bias=False)
        self.output_scale = output_scale  # as TimeMix.output_scale, on W_v

    def forward(self, y: torch.Tensor, cut: torch.Tensor | None = None) -> torch.Tensor:
        """y [B, T, D] -> [B, T, D]; position 0 of y reads the shift as 0 (see ``RwkvBlock.mlp_lookback``), and
        so does a position t where ``cut`` [B, T, 1] is set (a strict knockout's blocked edge t <- t-1)."""
        shifted = token_shift(y)
        if cut is not None:
            shifted = shifted.masked_fill(cut, 0.0)
        key = torch.square(torch.relu(self.key(lerp(y, shifted, self.time_mix_key))))
        receptance = torch.sigmoid(self.receptance(lerp(y, shifted, self.time_mix_receptance)))
        return receptance * self.value(key * self.output_scale)


class RwkvBlock(Block):
    """Time-mix, then channel-mix (whose token shift reads one position back), then the residual stream times
    ``residual_scale`` (1/2 after every ``rescale_every`` layers, 1 elsewhere)."""

    mlp_lookback: ClassVar[int] = 1

    def __init__(self, config: PretrainedConfig, layer: int) -> None:
        d_model, eps = config.hidden_size, config.layer_norm_epsilon
        every = config.rescale_every
        output_scale = 2.0 ** -(layer // every) if every > 0 else 1.0
        super().__init__(
            nn.LayerNorm(d_model, eps=eps),
            TimeMix(d_model, config.attention_hidden_size, output_scale),
            nn.LayerNorm(d_model, eps=eps),
            ChannelMix(d_model, config.intermediate_size, output_scale),
        )
        self.residual_scale = 0.5 if every > 0 and (layer + 1) % every == 0 else 1.0


class NormedEmbedding(nn.Module):
    """Token embeddings followed by a LayerNorm (RWKV's ``pre_ln`` of the first block)."""

    def __init__(self, vocab_size: int, dim: int, eps: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.embedding(input_ids))


def build(config: PretrainedConfig) -> CausalLM:
    """An RWKV-4 model from a transformers ``RwkvConfig``."""
    d_model = config.hidden_size
    return CausalLM(
        family="rwkv",
        embed=NormedEmbedding(config.vocab_size, d_model, config.layer_norm_epsilon),
        blocks=[RwkvBlock(config, layer) for layer in range(config.num_hidden_layers)],
        final_norm=nn.LayerNorm(d_model),  # transformers' ln_out keeps LayerNorm's default eps
        lm_head=nn.Linear(d_model, config.vocab_size, bias=False),
        max_positions=None,
        token_embedding_key="embed.embedding.weight",
    )


rename = renamer(
    (
        (r"^rwkv\.embeddings\.", "embed.embedding."),
        (r"^rwkv\.blocks\.0\.pre_ln\.", "embed.norm."),
        (r"^rwkv\.blocks\.(\d+)\.ln1\.", r"blocks.\1.mixer_norm."),
        (r"^rwkv\.blocks\.(\d+)\.attention\.", r"blocks.\1.mixer."),
        (r"^rwkv\.blocks\.(\d+)\.ln2\.", r"blocks.\1.mlp_norm."),
        (r"^rwkv\.blocks\.(\d+)\.feed_forward\.", r"blocks.\1.mlp."),
        (r"^rwkv\.ln_out\.", "final_norm."),
        (r"^head\.", "lm_head."),
    )
)


def convert_state_dict(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """transformers' names -> ours (checkpoints store the weights unscaled; the rescaling is ours to apply)."""
    return rename(dict(state_dict))
