"""Mamba-1 and Falcon-Mamba: our forward pass equals transformers' on random-weight models."""

import pytest
import torch
from transformers import FalconMambaConfig, FalconMambaForCausalLM, MambaConfig, MambaForCausalLM

from tests.oracle import max_logit_difference, mixer_reconstruction_error, randomize_, save_and_load

CASES = {
    "mamba": (MambaConfig, MambaForCausalLM),
    "falcon_mamba": (FalconMambaConfig, FalconMambaForCausalLM),
}


@pytest.fixture(params=sorted(CASES), scope="module")
def pair(request, tmp_path_factory):
    config_class, model_class = CASES[request.param]
    config = config_class(
        vocab_size=97,
        hidden_size=32,
        state_size=8,
        num_hidden_layers=3,
        expand=2,
        conv_kernel=4,
        time_step_rank=4,
        use_conv_bias=True,
    )
    theirs = randomize_(model_class(config), seed=1)
    ours = save_and_load(theirs, tmp_path_factory.mktemp(request.param))
    return theirs, ours


@pytest.mark.parametrize("seq_len", [1, 5, 17])
def test_logits_equal_transformers(pair, seq_len):
    theirs, ours = pair
    input_ids = torch.randint(0, 97, (2, seq_len), generator=torch.Generator().manual_seed(seq_len))
    assert max_logit_difference(theirs, ours, input_ids) <= 1e-4


def test_hidden_attention_reproduces_mixer(pair):
    _, ours = pair
    input_ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(3))
    assert mixer_reconstruction_error(ours, input_ids) <= 1e-5


def test_family_and_decay_norms(pair):
    theirs, ours = pair
    assert ours.family == ("falcon_mamba" if theirs.config.model_type == "falcon_mamba" else "mamba1")
    norms = ours.mixer(0).decay_norms()
    assert norms.shape == (ours.mixer(0).n_features,)
    assert torch.all(norms > 0) and torch.all(norms <= 8)
