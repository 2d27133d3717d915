"""OLMo-Hybrid: our forward pass equals transformers' on random-weight models (beta in (0, 2) or (0, 1),
with and without rotary), past the delta rule's chunk; the hidden attention reproduces each mixer and the
plain recurrence."""

import pytest
import torch
from transformers import OlmoHybridConfig, OlmoHybridForCausalLM

from infoflow.models import delta_rule
from infoflow.models.modes import MixerKind
from tests.oracle import GATED_DELTA_SIZES, max_logit_difference, mixer_reconstruction_error, randomize_, save_and_load

VOCAB = GATED_DELTA_SIZES["vocab_size"]
VARIANTS = {
    "neg-eigval-nope": dict(linear_allow_neg_eigval=True, rope_parameters=None),
    "rope": dict(linear_allow_neg_eigval=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
}


def olmo_hybrid_config(**overrides) -> OlmoHybridConfig:
    options = dict(
        GATED_DELTA_SIZES,
        layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
        pad_token_id=0,
        eos_token_id=1,
    )
    return OlmoHybridConfig(**{**options, **overrides})


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    theirs = randomize_(OlmoHybridForCausalLM(olmo_hybrid_config(**VARIANTS[request.param])), seed=6)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param))


def prompt(seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, seq_len), generator=torch.Generator().manual_seed(seed))


def test_layout(pair):
    theirs, ours = pair
    assert ours.family == "olmo_hybrid"
    assert ours.layer_kinds == (MixerKind.GATED_DELTA,) * 2 + (MixerKind.ATTENTION, MixerKind.GATED_DELTA)
    assert ours.mixer(0).beta_scale == (2.0 if theirs.config.linear_allow_neg_eigval else 1.0)


@pytest.mark.parametrize("seq_len", [1, 6, 70])  # 70: past transformers' chunk of 64
def test_logits_equal_transformers(pair, seq_len):
    theirs, ours = pair
    assert max_logit_difference(theirs, ours, prompt(seq_len, seed=seq_len)) <= 1e-4


def test_hidden_attention_reproduces_mixer_and_recurrence(pair):
    _, ours = pair
    input_ids = prompt(11, seed=3)
    assert mixer_reconstruction_error(ours, input_ids) <= 1e-5
    with torch.no_grad():
        p = ours.block(0).mixer_inputs(ours.residual_stream(input_ids)[0])
        expected = delta_rule.recurrence(p.q, p.k, p.v, p.log_gate, p.beta)
        assert (ours.mixer(0).mix(p) - expected).abs().max().item() <= 1e-5
