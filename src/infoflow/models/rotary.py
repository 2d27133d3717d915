"""Rotary position embeddings (RoPE) and the attention that reads rotated queries and keys.

With angles ``theta[t, i] = t inv_freq[i]`` (i < R/2, R the rotated dims of a head, R <= P) and an attention
factor m (1 unless a scaled rope type sets it), the first R dims of each query and key head are rotated in
pairs and the other P - R pass unchanged:

    halves (Llama, GPT-NeoX, Phi-3): pairs (i, i + R/2),  rotate_half([a, b]) = [-b, a]
    interleaved (GPT-J):             pairs (2i, 2i + 1),  rotate_every_two([x0, x1, ...]) = [-x1, x0, ...]
    x_rot[t] = m (x[t] cos(theta[t]) + rotate(x[t]) sin(theta[t]))      on those R dims

Since a rotated key depends on its absolute position, a tail of positions start..T-1 is rotated from ``start``
(:meth:`RotaryAttention.prepare_tail`); everything else is the shared causal attention.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from transformers import PretrainedConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from infoflow.models.attention import AttentionInputs, CausalSelfAttention
from infoflow.models.tails import TailRows

# rope types whose frequencies depend on the run-time sequence length (transformers updates them statefully)
LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


def default_inv_freq(theta: float, dim: int) -> torch.Tensor:
    """inv_freq[i] = theta^(-2i / dim), i < dim / 2 (fp32, on the CPU)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float, device="cpu") / dim))


class RotaryEmbedding:
    """RoPE of given frequencies; a plain object, not a module (models are built on the meta device and hold no
    buffers): ``inv_freq`` [R/2] lives on the CPU and moves to the input's device when used."""

    def __init__(self, inv_freq: torch.Tensor, attention_factor: float = 1.0, interleaved: bool = False) -> None:
        self.inv_freq = inv_freq.float()  # [R/2]
        self.attention_factor = float(attention_factor)
        self.interleaved = interleaved  # GPT-J's pairs (2i, 2i + 1) instead of (i, i + R/2)

    @property
    def rotary_dim(self) -> int:
        """R, the rotated dims of each head."""
        return 2 * self.inv_freq.numel()

    def cos_sin(self, start: int, stop: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """m cos(theta), m sin(theta) [T, R] for positions start..stop-1, each angle at both dims of its pair
        (fp32 math, in ``like``'s dtype)."""
        if self.inv_freq.device != like.device:
            self.inv_freq = self.inv_freq.to(like.device)
        positions = torch.arange(start, stop, device=like.device, dtype=torch.float)
        theta = positions[:, None] * self.inv_freq[None, :]  # [T, R/2]
        # [T, R]: theta_0, theta_0, theta_1, theta_1, ... (interleaved) or theta_0, theta_1, ..., theta_0, theta_1, ...
        theta = theta.repeat_interleave(2, dim=-1) if self.interleaved else torch.cat((theta, theta), dim=-1)
        cos, sin = theta.cos() * self.attention_factor, theta.sin() * self.attention_factor
        return cos.to(like.dtype), sin.to(like.dtype)

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, T, H, P] with its first R dims rotated by ``cos``, ``sin`` [T, 1, R] (see the module doc)."""
        return (rotate_interleaved if self.interleaved else rotate)(x, cos, sin)


class Rotary(RotaryEmbedding):
    """RoPE frequencies from a transformers config's ``rope_parameters`` (of ``layer_type`` where the config
    has one set per layer type): the default ``theta^(-2i/R)`` with R = P * partial_rotary_factor, or
    transformers' own rope utilities for static scaled types."""

    def __init__(self, config: PretrainedConfig, head_dim: int, layer_type: str | None = None) -> None:
        params = config.rope_parameters if layer_type is None else config.rope_parameters[layer_type]
        rope_type = params.get("rope_type", "default")
        if rope_type in LENGTH_DEPENDENT_ROPE or (rope_type != "default" and rope_type not in ROPE_INIT_FUNCTIONS):
            raise ValueError(f"rope_type {rope_type!r} is not supported (use default or a static scaled type)")
        if rope_type == "default":
            inv_freq = default_inv_freq(params["rope_theta"], int(head_dim * params.get("partial_rotary_factor", 1.0)))
            attention_factor = 1.0
        else:
            per_type = {} if layer_type is None else {"layer_type": layer_type}
            with torch.device("cpu"):  # build() runs under the meta device
                inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"), **per_type)
        super().__init__(inv_freq, attention_factor)
        if self.rotary_dim > head_dim:
            raise ValueError(f"rotary embeddings of {self.rotary_dim} dims do not fit heads of {head_dim}")


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, P] -> its first R dims (R = cos.shape[-1]) as x cos + rotate_half(x) sin, rotate_half([a, b])
    = [-b, a]; the other P - R dims unchanged."""
    rotary_dim = cos.shape[-1]
    if rotary_dim < x.shape[-1]:
        return torch.cat((rotate(x[..., :rotary_dim], cos, sin), x[..., rotary_dim:]), dim=-1)
    a, b = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-b, a), dim=-1) * sin


def rotate_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, P] -> its first R dims as x cos + rotate_every_two(x) sin, rotate_every_two: (x_2i, x_2i+1)
    -> (-x_2i+1, x_2i); the other P - R dims unchanged (GPT-J)."""
    rotary_dim = cos.shape[-1]
    if rotary_dim < x.shape[-1]:
        return torch.cat((rotate_interleaved(x[..., :rotary_dim], cos, sin), x[..., rotary_dim:]), dim=-1)
    even, odd = x[..., 0::2], x[..., 1::2]
    return x * cos + torch.stack((-odd, even), dim=-1).flatten(-2) * sin


class RotaryAttention(CausalSelfAttention):
    """Causal attention on RoPE-rotated queries and keys: subclasses give the heads (``projections``) and the
    output projection (``project``). ``rotary`` None: no position encoding (NoPE layers of hybrids)."""

    rotary: RotaryEmbedding | None

    @abstractmethod
    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unrotated q [B, T, H, P], k and v [B, T, Hkv, P] of the normed inputs ``hidden`` [B, T, D]."""

    def prepare(self, hidden: torch.Tensor) -> AttentionInputs:
        return self.heads(hidden, start=0)

    def prepare_tail(
        self, hidden_tail: torch.Tensor, prefix: AttentionInputs, start: int, rows: TailRows
    ) -> AttentionInputs:
        return self.heads(hidden_tail, start)

    def heads(self, hidden: torch.Tensor, start: int) -> AttentionInputs:
        """Rotated heads of the normed inputs ``hidden`` [B, T, D] at positions start..start+T-1."""
        q, k, v = self.projections(hidden)
        if self.rotary is None:
            return AttentionInputs(q=q, k=k, v=v)
        cos, sin = (x[:, None] for x in self.rotary.cos_sin(start, start + hidden.shape[1], hidden))  # [T, 1, R]
        return AttentionInputs(q=self.rotary.rotate(q, cos, sin), k=self.rotary.rotate(k, cos, sin), v=v)
