"""Phi-3: our forward pass (Llama's, on the split fused projections) equals transformers' on random-weight models
(grouped-query attention, sliding window, partial rotary); attention knockout semantics
(tests/attention_suite.py)."""

import pytest
import torch
from transformers import Phi3Config, Phi3ForCausalLM

from infoflow.models.phi3 import build
from tests.attention_checks import VOCAB
from tests.attention_suite import AttentionOracleSuite
from tests.oracle import randomize_, save_and_load

WINDOW = 4
CASES = {
    # Phi-3-mini's layout (every layer within a sliding window), with grouped-query attention
    "phi3": dict(num_key_value_heads=2, sliding_window=WINDOW),
    # Phi-4-mini's: three quarters of each head rotated, tied embeddings, no window
    "partial_rotary": dict(num_key_value_heads=1, partial_rotary_factor=0.75, tie_word_embeddings=True),
}


def config(**options) -> Phi3Config:
    return Phi3Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        attn_implementation="eager",
        **options,
    )


@pytest.fixture(params=sorted(CASES), scope="module")
def pair(request, tmp_path_factory):
    options = CASES[request.param]
    theirs = randomize_(Phi3ForCausalLM(config(**options)), seed=5)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param)), options.get("sliding_window")


class TestPhi3(AttentionOracleSuite):
    family = "phi3"

    def their_attention(self, theirs, layer, normed, mask):
        rotary = theirs.model.rotary_emb(normed, torch.arange(normed.shape[1])[None])
        return theirs.model.layers[layer].self_attn(normed, position_embeddings=rotary, attention_mask=mask)[0]


def test_window_and_rotary_follow_the_config(pair):
    theirs, ours, window = pair
    assert all(ours.mixer(layer).sliding_window == window for layer in range(ours.n_layers))
    factor = theirs.config.rope_parameters["partial_rotary_factor"]
    assert ours.mixer(0).rotary.rotary_dim == int(ours.mixer(0).head_dim * factor)


def test_length_dependent_rope_rejected():
    """Phi-3's 128k-context checkpoints use longrope, whose frequencies change with the prompt length."""
    head_dim = 8
    longrope = dict(rope_type="longrope", short_factor=[1.0] * (head_dim // 2), long_factor=[2.0] * (head_dim // 2))
    with pytest.raises(ValueError, match="longrope"):
        build(config(rope_parameters=longrope, original_max_position_embeddings=32))
