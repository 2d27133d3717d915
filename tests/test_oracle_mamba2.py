"""Mamba-2: our forward pass equals transformers' on random-weight models; its knockouts equal hand computations."""

import pytest
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM

from infoflow.interventions.knockout import Knockout, KnockoutMode
from infoflow.interventions.layer_knockout import layer_knockouts
from infoflow.models.mamba2 import Mamba2Mixer
from tests.oracle import OracleSuite, hand_ssd, knocked_logits, randomize_, save_and_load
from tests.oracle import prompt as random_prompt

VOCAB = 97
CHUNK = 8  # small, so that prompts of 17 and 20 tokens take the multi-chunk path with padding
VARIANTS = {"g1h2": (1, 2), "g1h4": (1, 4), "g2h8": (2, 8)}  # n_groups, num_heads


def mamba2_config(n_groups: int, num_heads: int, num_hidden_layers: int = 2) -> Mamba2Config:
    return Mamba2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        num_heads=num_heads,
        head_dim=64 // num_heads,
        state_size=8,
        n_groups=n_groups,
        num_hidden_layers=num_hidden_layers,
        expand=2,
        conv_kernel=4,
        chunk_size=CHUNK,
        use_conv_bias=True,
    )


@pytest.fixture(params=sorted(VARIANTS), scope="module")
def pair(request, tmp_path_factory):
    theirs = randomize_(Mamba2ForCausalLM(mamba2_config(*VARIANTS[request.param])), seed=2)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param))


def prompt(seq_len: int, seed: int = 0) -> torch.Tensor:
    return random_prompt(VOCAB, seq_len, seed)


class TestMamba2(OracleSuite):
    vocab = VOCAB


def test_family_and_decay_norms(pair):
    theirs, ours = pair
    assert ours.family == "mamba2" and ours.mixer(0).n_features == theirs.config.num_heads
    a_log = theirs.backbone.layers[0].mixer.A_log
    torch.testing.assert_close(ours.mixer(0).decay_norms(), torch.exp(-torch.exp(a_log)))


def hand_knocked_block(block, hidden: torch.Tensor, edges: set[tuple[int, int]], zero_delta: bool) -> torch.Tensor:
    """A transformers ``Mamba2Block`` on hidden [T, D], with M_h[t, s] = 0 for ``edges``, by explicit sums over s.

    With ``zero_delta``, row t also sees Delta = 0 at its blocked sources (no input and no decay there).
    """
    mixer = block.mixer
    y, z = hand_ssd(mixer, mixer.in_proj(block.norm(hidden)), edges, zero_delta)
    return hidden + mixer.out_proj(mixer.norm(y, z))


@pytest.mark.parametrize("mode", sorted(Mamba2Mixer.knockout_modes))
def test_knockout_equals_hand_computation(pair, mode):
    theirs, ours = pair
    edges = {(6, 2), (6, 4), (4, 1), (3, 3)}
    input_ids = prompt(7, seed=5)[:1]
    with torch.no_grad():
        hidden = theirs.backbone.embeddings(input_ids)
        hidden = theirs.backbone.layers[0](hidden)
        hidden = hand_knocked_block(theirs.backbone.layers[1], hidden[0], edges, mode is KnockoutMode.ZERO_DELTA)
        expected = theirs.lm_head(theirs.backbone.norm_f(hidden))
        knocked = knocked_logits(ours, input_ids, Knockout(edges=tuple(edges), layers=(1,), mode=mode))[0]
        clean = ours(input_ids)[0]
    assert (knocked - expected).abs().max().item() <= 1e-4
    targets = [3, 4, 6]
    assert torch.equal(knocked[[0, 1, 2, 5]], clean[[0, 1, 2, 5]])  # rows without a blocked edge are untouched
    assert (knocked[targets] - clean[targets]).abs().amax(-1).min().item() > 1e-3  # every target row changes


def test_zero_delta_differs_only_when_a_source_decays_across_the_blocked_step(pair):
    _, ours = pair
    input_ids = prompt(9, seed=6)

    def logits(source: int, mode: KnockoutMode) -> torch.Tensor:
        with torch.no_grad():
            return knocked_logits(ours, input_ids, Knockout.between([8], [source], layers=(0, 1), mode=mode))[:, -1]

    # blocking s = 4 < t = 8: zero-delta also skips step 4's decay of what positions 0..3 wrote
    between = (logits(4, KnockoutMode.ZERO_DELTA) - logits(4, KnockoutMode.ZERO_ATTENTION)).abs().max().item()
    assert between > 1e-3
    # blocking s = 0: no earlier source decays across step 0, so both modes remove the same term
    first = (logits(0, KnockoutMode.ZERO_DELTA) - logits(0, KnockoutMode.ZERO_ATTENTION)).abs().max().item()
    assert first <= 1e-5


@pytest.mark.parametrize(
    ("mode", "strict", "independent"),
    [
        (KnockoutMode.ZERO_DELTA, True, True),
        (KnockoutMode.ZERO_DELTA, False, False),  # the conv carries x, B, C of the source to the target
        (KnockoutMode.ZERO_ATTENTION, True, False),  # the source's Delta still decays earlier sources
    ],
)
def test_strict_zero_delta_cuts_the_source_off_in_one_layer(pair, mode, strict, independent):
    """Layer 0's output at the target ignores the blocked source's token only with zero-delta and strict."""
    _, ours = pair
    target, source = 8, 6  # within the conv's reach
    input_ids = prompt(9, seed=7)
    changed = input_ids.clone()
    changed[:, source] = (changed[:, source] + 1) % VOCAB
    knockout = layer_knockouts(ours, Knockout.between([target], [source], (0,), mode=mode, strict=strict), 9)[0]
    with torch.no_grad():
        outputs = [ours.blocks[0](ours.embed(ids), knockout)[:, target] for ids in (input_ids, changed)]
    difference = (outputs[0] - outputs[1]).abs().max().item()
    if independent:
        assert difference == 0.0
    else:
        assert difference > 1e-4
