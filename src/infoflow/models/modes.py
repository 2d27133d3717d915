"""How a mixer removes a blocked edge (torch-free, so that knockout specs import it without torch)."""

from __future__ import annotations

from enum import StrEnum


class KnockoutMode(StrEnum):
    """How a recurrent mixer removes a blocked edge (attention has one way: its logit is set to -inf).

    ``WRITE_ONLY`` is another name for ``ZERO_ATTENTION`` (what it means on a delta-rule layer).
    """

    # alpha[t, s, f] = 0: the source's term is removed, the decay between s and t is kept (reference default)
    ZERO_ATTENTION = "zero-attention"
    # Delta[s] = 0 for the target's view: the source adds nothing *and* its step does not decay the state
    ZERO_DELTA = "zero-delta"
    # delta rule (Gated DeltaNet): beta[s] = 0 for the target's view: the source neither writes nor erases
    WRITE_AND_ERASE = "write-and-erase"
    # delta rule: zero-attention removes the source's write only (its erasure of earlier memory stays)
    WRITE_ONLY = "zero-attention"
    # normalised mixers (RWKV-4's WKV, mLSTM): zero-attention removes the source from the numerator and from the
    # normaliser, so the row renormalises (as attention's softmax does); RENORMALIZE is another name for it
    RENORMALIZE = "zero-attention"
    # normalised mixers: the source leaves the numerator only; the normaliser keeps its weight
    NUMERATOR_ONLY = "numerator-only"

    @property
    def changes_sources(self) -> bool:
        """The mode changes the blocked sources themselves for the target's view (their gate, write or step), so
        each target row needs its own materialisation; the other modes remove entries of the target's row only."""
        return self in (KnockoutMode.ZERO_DELTA, KnockoutMode.WRITE_AND_ERASE)


class MixerKind(StrEnum):
    """What a layer's token mixer is; hybrids mix kinds across layers."""

    NONE = "none"  # no token mixer: the layer transforms each position alone (Nemotron-H's MLP layers)
    ATTENTION = "attention"
    SELECTIVE_SCAN = "selective_scan"  # Mamba-1: one decay per channel and state
    SSD = "ssd"  # Mamba-2: one scalar decay per head
    PARALLEL = "parallel"  # attention and a state-space branch side by side (Falcon-H1); features of both kinds
    GATED_DELTA = "gated_delta"  # Gated DeltaNet: the gated delta rule, one scalar gate per head
    RG_LRU = "rg_lru"  # RecurrentGemma: a gated diagonal recurrence, one decay per channel
    SHORT_CONV = "short_conv"  # LFM2: a gated short convolution (a banded mixing, no state beyond the kernel)
    RWKV = "rwkv"  # RWKV-4: the WKV, a softmax over positions with a fixed decay per channel
    MLSTM = "mlstm"  # xLSTM's mLSTM: a matrix memory with exponential gates and a normaliser

    @property
    def is_recurrent(self) -> bool:
        """A recurrence (state-space or linear RNN, a state carried over any distance), or a layer with one in it
        (a parallel hybrid); not softmax attention, a short convolution nor a layer without mixing."""
        return self not in (MixerKind.ATTENTION, MixerKind.SHORT_CONV, MixerKind.NONE)


# What each kind is called in help texts and messages.
KIND_NAMES = {
    MixerKind.NONE: "no mixer",
    MixerKind.ATTENTION: "attention",
    MixerKind.SELECTIVE_SCAN: "Mamba-1",
    MixerKind.SSD: "Mamba-2",
    MixerKind.PARALLEL: "Falcon-H1",
    MixerKind.GATED_DELTA: "Gated DeltaNet",
    MixerKind.RG_LRU: "RG-LRU",
    MixerKind.SHORT_CONV: "short conv",
    MixerKind.RWKV: "RWKV",
    MixerKind.MLSTM: "mLSTM",
}
# The kinds that take each mode beyond zero-attention (which every mixer takes) and strictness, for help texts
# without torch. Each mixer declares its own (TokenMixer.knockout_modes, supports_strict); tests hold these to them.
# Strict: the recurrences with a short conv or a token shift in front (mLSTM has none).
STRICT_KINDS = (
    MixerKind.SELECTIVE_SCAN,
    MixerKind.SSD,
    MixerKind.PARALLEL,
    MixerKind.GATED_DELTA,
    MixerKind.RG_LRU,
    MixerKind.RWKV,
)
MODE_KINDS = {
    KnockoutMode.ZERO_DELTA: (*STRICT_KINDS, MixerKind.MLSTM),
    KnockoutMode.WRITE_AND_ERASE: (MixerKind.GATED_DELTA,),
    KnockoutMode.NUMERATOR_ONLY: (MixerKind.RWKV, MixerKind.MLSTM),
}


def kind_names(kinds: tuple[MixerKind, ...]) -> str:
    return ", ".join(KIND_NAMES[kind] for kind in kinds)


def mode_help() -> str:
    """``--mode``: what each mode does to a blocked edge t <- s, and on which mixers."""
    return (
        "How a layer removes a blocked edge t <- s. zero-attention (every mixer): the term of s in the row of t is "
        "removed (attention: logit -inf; a recurrence keeps the decay; Gated DeltaNet: the write of s only; RWKV, "
        f"mLSTM: the row renormalises). zero-delta ({kind_names(MODE_KINDS[KnockoutMode.ZERO_DELTA])}): the step "
        f"of s is skipped for t (no input, no decay). write-and-erase "
        f"({kind_names(MODE_KINDS[KnockoutMode.WRITE_AND_ERASE])}): s neither writes nor erases. numerator-only "
        f"({kind_names(MODE_KINDS[KnockoutMode.NUMERATOR_ONLY])}): s leaves the numerator only. Layers that do "
        "not take the mode use zero-attention."
    )


def strict_help() -> str:
    """``--strict``: what a strict knockout removes besides the mixing itself, and on which mixers."""
    return (
        "Also remove the blocked sources from the conv or token shift in front of the recurrence "
        f"({kind_names(STRICT_KINDS)}); other layers have none."
    )


class Site(StrEnum):
    """A place in one layer's step where an intervention may read or replace a value [B, T, D]."""

    RESIDUAL = "residual"  # the layer's output: the residual stream after the layer
    MIXER = "mixer"  # the token mixer's update (after its output projection and any post-norm)
    MLP = "mlp"  # the MLP's update (after any post-norm)
