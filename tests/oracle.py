"""Shared helpers for oracle tests: random-weight transformers models, saved and loaded through our loader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from transformers import PreTrainedModel

from infoflow.interventions.knockout import Knockout, KnockoutMode
from infoflow.interventions.layer_knockout import layer_knockouts
from infoflow.models.base import CausalLM
from infoflow.models.loading import load_hf_folder

Pair = tuple[PreTrainedModel, CausalLM]  # transformers' random-weight model, ours loaded from its save


def prompt(vocab: int, seq_len: int, seed: int, batch: int = 2) -> torch.Tensor:
    """Seeded random token ids [batch, seq_len] below ``vocab``."""
    return torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


class OracleSuite:
    """The oracle tests of the families with Mamba-2 layers (SSD chunks of 8, so that prompts of 17 and 20
    tokens take the multi-chunk path with padding), as a base class: a family's test module subclasses it in a
    ``Test...`` class with the config's ``vocab`` and gives it a ``pair`` fixture (:data:`Pair`)."""

    vocab: ClassVar[int]

    @pytest.mark.parametrize("seq_len", [1, 5, 17, 20])
    def test_logits_equal_transformers(self, pair: Pair, seq_len: int) -> None:
        theirs, ours = pair
        assert max_logit_difference(theirs, ours, prompt(self.vocab, seq_len, seed=seq_len)) <= 1e-4

    @pytest.mark.parametrize("seq_len", [11, 19])
    def test_hidden_attention_reproduces_every_mixer(self, pair: Pair, seq_len: int) -> None:
        _, ours = pair
        assert mixer_reconstruction_error(ours, prompt(self.vocab, seq_len, seed=3)) <= 1e-5


def randomize_(model: PreTrainedModel, seed: int = 0) -> PreTrainedModel:
    """Give every parameter random values (default inits leave many at 0/1, which hides layout bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            scale = 0.5 if name.endswith(("A_log", "dt_proj.bias", "dt_bias", ".D")) else 0.2
            parameter.copy_(noise * scale + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return model.eval()


# The sizes the tiny Gated DeltaNet hybrids share (Qwen3-Next, Qwen3.5, OLMo-Hybrid): 4 layers of width 32,
# attention of 4 query and 2 key-value heads, the delta rule's 2 key heads of 8 and 4 value heads of 6.
GATED_DELTA_SIZES = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    linear_key_head_dim=8,
    linear_value_head_dim=6,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
)


def randomize_one_plus_norms_(model: PreTrainedModel, seed: int) -> PreTrainedModel:
    """``randomize_`` for models whose RMSNorms scale by 1 + w (Qwen3-Next, Qwen3.5): their w around 0 (as
    ``randomize_`` centres norm weights at 1); a vision tower's norms keep theirs."""
    randomize_(model, seed=seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if type(module).__name__.endswith("RMSNorm") and "visual" not in name:
                module.weight -= 1.0
    return model


def save_and_load(model: PreTrainedModel, folder: Path) -> CausalLM:
    """``save_pretrained`` the transformers model and load it back as ours through the real loader."""
    model.save_pretrained(folder)
    ours, _ = load_hf_folder(folder)
    return ours


def max_logit_difference(theirs: PreTrainedModel, ours: CausalLM, input_ids: torch.Tensor) -> float:
    with torch.no_grad():
        return (theirs(input_ids).logits - ours(input_ids)).abs().max().item()


def mixer_reconstruction_error(ours: CausalLM, input_ids: torch.Tensor) -> float:
    """max |matrix @ values + skip - mix(...)| over every layer's mixer (hidden-attention export check)."""
    worst = 0.0
    with torch.no_grad():
        for layer, residual in enumerate(ours.residual_stream(input_ids)[:-1]):
            mixer = ours.mixer(layer)
            prepared = ours.block(layer).mixer_inputs(residual)
            terms = mixer.terms(prepared)
            assert terms.matrix.shape[1] == mixer.n_features
            assert torch.all(terms.matrix.triu(1) == 0), "hidden attention must be causal"
            worst = max(worst, (terms.mixed() - mixer.mix(prepared)).abs().max().item())
    return worst


def knocked_logits(ours: CausalLM, input_ids: torch.Tensor, knockout: Knockout) -> torch.Tensor:
    """Logits [B, T, V] of the reference path: the knockout applied in each of its layers."""
    return ours(input_ids, layer_knockouts(ours, knockout, input_ids.shape[1]))


def assert_knockout_equals_theirs(
    theirs: PreTrainedModel, ours: CausalLM, input_ids: torch.Tensor, knockout: Knockout
) -> None:
    """Our knocked-out logits [1, T] equal those of ``theirs`` (a transformers model whose layer was knocked out by
    hand) to 1e-4; positions before the first target stay clean bit for bit, and every later one changes."""
    first = knockout.first_target
    with torch.no_grad():
        expected = theirs(input_ids, use_cache=False).logits[0]
        knocked = knocked_logits(ours, input_ids, knockout)[0]
        clean = ours(input_ids)[0]
    assert (knocked - expected).abs().max().item() <= 1e-4
    assert torch.equal(knocked[:first], clean[:first])
    assert (knocked[first:] - clean[first:]).abs().amax(-1).min().item() > 1e-5


def hybrid_sweep(model: CausalLM) -> tuple[torch.Tensor, list[Knockout | None]]:
    """A prompt and knockouts over every window of two layers, with every mode, strictness, decay category and
    restriction to one mixer kind of the model (None: every kind)."""
    from infoflow.interventions.knockout import FeatureCategory, FeatureSelection, KnockoutMode

    input_ids = torch.tensor([3, 14, 15, 9, 26, 5, 35, 7])
    kinds = sorted({kind for layer in range(model.n_layers) for kind, _ in model.mixer(layer).feature_kinds()})
    last = len(input_ids) - 1
    knockouts: list[Knockout | None] = [None]
    for start in range(model.n_layers - 1):
        for index, restriction in enumerate([None, *({kind} for kind in kinds)]):
            mode, strict = list(KnockoutMode)[index % 2], index % 3 == 1
            category = list(FeatureCategory)[(start + index) % len(FeatureCategory)]
            features = FeatureSelection(category, kinds=restriction)
            options = {"mode": mode, "strict": strict, "features": features}
            knockouts.append(Knockout.between([last], [1, 2], range(start, start + 2), **options))
            knockouts.append(Knockout.between([4, last], [0, 3], range(start, start + 2), **options))
    return input_ids, knockouts


def assert_kind_restricted_engines_agree(model: CausalLM) -> None:
    """The fast engine gives the reference engine's numbers for knockouts restricted to one mixer kind."""
    from infoflow.engines.fast import FastEngine
    from infoflow.engines.reference import ReferenceEngine

    input_ids, knockouts = hybrid_sweep(model)
    fast = FastEngine(model, max_batch=3).probabilities(input_ids, knockouts)
    reference = ReferenceEngine(model).probabilities(input_ids, knockouts)
    assert (fast - reference).abs().max().item() <= 1e-5


def assert_half_precision_engines_agree(model: CausalLM, dtype: torch.dtype) -> None:
    """In ``dtype`` both engines run the sweep, agree with each other and stay near the fp32 numbers."""
    import copy

    from infoflow.engines.fast import FastEngine
    from infoflow.engines.reference import ReferenceEngine

    input_ids, knockouts = hybrid_sweep(model)
    exact = ReferenceEngine(model).probabilities(input_ids, knockouts)
    half = copy.deepcopy(model).to(dtype)
    fast = FastEngine(half, max_batch=4).probabilities(input_ids, knockouts).float()
    reference = ReferenceEngine(half).probabilities(input_ids, knockouts).float()
    assert torch.isfinite(fast).all() and torch.isfinite(reference).all()
    assert (fast - reference).abs().max().item() <= 5e-3
    assert max((fast - exact).abs().max().item(), (reference - exact).abs().max().item()) <= 1e-2


def hand_ssd(
    mixer: torch.nn.Module, projected: torch.Tensor, edges: set[tuple[int, int]], zero_delta: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A transformers Mamba-2 mixer (Mamba2Mixer, FalconH1Mixer, ...) on its in_proj output ``projected`` [T, ...]
    by explicit sums over s, with M_h[t, s] = 0 for ``edges``: y [T, Di] (before the gate) and the gate z [T, Di].

    y[t, h] = sum_s (C[t] . B[s]) exp(sum_{r=s+1..t} Delta[r, h] a_h) Delta[s, h] x[s, h] + D_h x[t, h]; with
    ``zero_delta``, row t also sees Delta = 0 at its blocked sources (no input and no decay there).
    """
    import torch.nn.functional as F

    seq_len, heads, groups = projected.shape[0], mixer.num_heads, mixer.n_groups
    group_width = groups * mixer.ssm_state_size
    z, xBC, dt = projected.split([mixer.intermediate_size, mixer.conv_dim, heads], dim=-1)
    conv = mixer.conv1d
    xBC = F.silu(F.conv1d(xBC.T, conv.weight, conv.bias, padding=conv.kernel_size[0] - 1, groups=mixer.conv_dim))
    x, B, C = xBC[:, :seq_len].T.split([mixer.intermediate_size, group_width, group_width], dim=-1)
    x, B, C = x.view(seq_len, heads, -1), B.view(seq_len, groups, -1), C.view(seq_len, groups, -1)
    delta = F.softplus(dt + mixer.dt_bias)  # [T, H]
    a = -torch.exp(mixer.A_log)  # [H]
    y = torch.zeros_like(x)
    for t in range(seq_len):
        blocked = {s for target, s in edges if target == t}
        row_delta = delta.clone()
        if zero_delta:
            row_delta[sorted(blocked)] = 0.0
        for h in range(heads):
            g = h // (heads // groups)
            for s in set(range(t + 1)) - blocked:
                m = (C[t, g] @ B[s, g]) * torch.exp(row_delta[s + 1 : t + 1, h].sum() * a[h])
                y[t, h] += m * row_delta[s, h] * x[s, h]
            y[t, h] += mixer.D[h] * x[t, h]
    return y.flatten(1), z


DeltaRule = Callable[..., torch.Tensor]  # (q, k, v, g, beta) -> o [B, T, H, V]


def hand_knocked_delta_rule(
    run: DeltaRule, inputs: tuple[torch.Tensor, ...], edges: set[tuple[int, int]], mode: KnockoutMode
) -> torch.Tensor:
    """o [B, T, H, V] of the delta rule ``run`` on ``inputs`` (q, k, v, g, beta; positions on dim 1) where row t
    is read from a run in which each of its blocked sources s is changed by hand: v_s = 0 (write-only),
    beta_s = 0 (write-and-erase), beta_s = 0 and g_s = 0 (zero-delta)."""
    q, k, v, g, beta = inputs
    out = run(q, k, v, g, beta)
    for t in sorted({t for t, _ in edges}):
        sources = sorted(s for target, s in edges if target == t)
        v_t, g_t, beta_t = v.clone(), g.clone(), beta.clone()
        if mode is KnockoutMode.WRITE_ONLY:
            v_t[:, sources] = 0.0
        else:
            beta_t[:, sources] = 0.0
            if mode is KnockoutMode.ZERO_DELTA:
                g_t[:, sources] = 0.0
        out[:, t] = run(q, k, v_t, g_t, beta_t)[:, t]
    return out
