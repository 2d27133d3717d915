"""Nemotron-H: our forward pass equals transformers' on random-weight models (Mamba-2, attention, MLP and MoE
layers); knockouts per kind of layer, and none in the layers without a token mixer."""

import pytest
import torch
from transformers import NemotronHConfig, NemotronHForCausalLM

from infoflow.interventions.knockout import Knockout
from infoflow.models.mamba2 import Mamba2Mixer
from infoflow.models.modes import MixerKind
from infoflow.models.nemotron_h import build
from tests.hybrid_checks import HybridOracleSuite
from tests.oracle import knocked_logits, prompt, randomize_, save_and_load

VOCAB = 97
CHUNK = 8  # prompts of 17 and 20 tokens take the multi-chunk path with padding
PATTERN = "M-*EM"  # hybrid_override_pattern: Mamba-2, MLP, attention, MoE, Mamba-2
KINDS = [MixerKind.SSD, MixerKind.NONE, MixerKind.ATTENTION, MixerKind.NONE, MixerKind.SSD]
VARIANTS = {  # routing options: renormalised top-k of one group, or plain scores of the best of two groups
    "one_group": {},
    "two_groups_tied": {
        "n_group": 2,
        "topk_group": 1,
        "norm_topk_prob": False,
        "routed_scaling_factor": 2.0,
        "tie_word_embeddings": True,
    },
}


def nemotron_config(**options) -> NemotronHConfig:
    return NemotronHConfig(
        **{
            "vocab_size": VOCAB,
            "hidden_size": 32,
            "hybrid_override_pattern": PATTERN,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "intermediate_size": 24,
            "mamba_num_heads": 4,
            "mamba_head_dim": 16,
            "ssm_state_size": 8,
            "n_groups": 2,
            "chunk_size": CHUNK,
            "time_step_min": 0.05,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 12,
            "moe_shared_expert_intermediate_size": 10,
            **options,
        }
    )


@pytest.fixture(params=sorted(VARIANTS), scope="module")
def pair(request, tmp_path_factory):
    theirs = randomize_(NemotronHForCausalLM(nemotron_config(**VARIANTS[request.param])), seed=2)
    with torch.no_grad():  # a buffer: randomize_ leaves it at 0
        theirs.model.layers[3].mixer.gate.e_score_correction_bias.normal_(generator=torch.Generator().manual_seed(4))
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param))


class TestNemotronH(HybridOracleSuite):
    vocab, attention_layer, aliases = VOCAB, 2, ("nemotron-h-4b", "nemotron-h-8b")

    def their_attention(self, theirs):
        return 2, theirs.model.layers[2].mixer, None  # NoPE


def test_layer_kinds_follow_the_pattern(pair):
    _, ours = pair
    assert ours.family == "nemotron_h" and list(ours.layer_kinds) == KINDS and ours.has_decay_features


def test_layers_without_mixer_move_nothing(pair):
    """MLP and MoE layers: zero hidden attention, and a knockout there (any mode) leaves every logit as it was."""
    _, ours = pair
    input_ids = prompt(VOCAB, 9, seed=8)
    for layer in (1, 3):
        assert torch.equal(ours.hidden_attention(input_ids, layer), torch.zeros(2, 1, 9, 9))
    for mode in Mamba2Mixer.knockout_modes:  # the modes the model's other layers accept
        knockout = Knockout.between([8, 5], range(9), [1, 3], mode=mode, strict=True)
        with torch.no_grad():
            assert torch.equal(knocked_logits(ours, input_ids, knockout), ours(input_ids))


def test_latent_moe_is_refused():
    with pytest.raises(ValueError, match="moe_latent_size"):
        build(nemotron_config(moe_latent_size=8))
