"""Falcon-H1: our forward pass equals transformers' on random-weight models; both branches' hidden attention
reproduces them; a knockout blocks an edge in both branches, or in one branch when asked, as computed by hand."""

import pytest
import torch
import torch.nn.functional as F
from transformers import FalconH1Config, FalconH1ForCausalLM

from infoflow.interventions.knockout import FeatureCategory, FeatureSelection, Knockout, KnockoutMode
from infoflow.interventions.layer_knockout import exempt_features
from infoflow.models.falcon_h1 import ParallelMixer
from infoflow.models.modes import MixerKind
from tests.oracle import (
    assert_half_precision_engines_agree,
    assert_kind_restricted_engines_agree,
    hand_ssd,
    knocked_logits,
    max_logit_difference,
    mixer_reconstruction_error,
    randomize_,
    save_and_load,
)

VOCAB = 97
CHUNK = 8  # prompts of 17 and 20 tokens take the multi-chunk path with padding
MULTIPLIERS = dict(
    attention_in_multiplier=0.7,
    attention_out_multiplier=1.3,
    key_multiplier=0.9,
    ssm_in_multiplier=1.1,
    ssm_out_multiplier=0.8,
    ssm_multipliers=[0.5, 1.5, 0.75, 1.25, 0.9],
    mlp_multipliers=[0.6, 1.4],
    embedding_multiplier=2.0,
    lm_head_multiplier=0.5,
)
# name -> options: the SSM output gate (plain, or a gated RMSNorm before / after the gate), groups, head widths
VARIANTS = {
    "gate": dict(mamba_rms_norm=False, mamba_n_groups=1, mamba_d_head=8, mamba_n_heads=4),
    "norm_then_gate": dict(mamba_rms_norm=True, mamba_norm_before_gate=True, mamba_n_groups=2, mamba_d_head=4),
    "gate_then_norm": dict(mamba_rms_norm=True, mamba_norm_before_gate=False, mamba_n_groups=2, mamba_d_head=16),
}


def falcon_h1_config(options: dict) -> FalconH1Config:
    n_heads = options.pop("mamba_n_heads", 32 // options["mamba_d_head"])
    return FalconH1Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        mamba_d_ssm=32,
        mamba_n_heads=n_heads,
        mamba_d_state=8,
        mamba_chunk_size=CHUNK,
        attn_implementation="eager",
        **options,
        **MULTIPLIERS,
    )


@pytest.fixture(params=sorted(VARIANTS), scope="module")
def pair(request, tmp_path_factory):
    theirs = randomize_(FalconH1ForCausalLM(falcon_h1_config(dict(VARIANTS[request.param]))), seed=2)
    return theirs, save_and_load(theirs, tmp_path_factory.mktemp(request.param))


def prompt(seq_len: int, seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seq_len", [1, 5, 17, 20])
def test_logits_equal_transformers(pair, seq_len):
    theirs, ours = pair
    # transformers' gated RMSNorm squeezes a one-token sequence and then broadcasts over the batch: batch 1 there
    input_ids = prompt(seq_len, seed=seq_len, batch=1 if seq_len == 1 else 2)
    assert max_logit_difference(theirs, ours, input_ids) <= 1e-4


@pytest.mark.parametrize("seq_len", [11, 19])
def test_hidden_attention_reproduces_both_branches(pair, seq_len):
    _, ours = pair
    input_ids = prompt(seq_len, seed=3)
    assert mixer_reconstruction_error(ours, input_ids) <= 1e-5
    with torch.no_grad():
        for layer, residual in enumerate(ours.residual_stream(input_ids)[:-1]):
            mixer = ours.mixer(layer)
            prepared = ours.block(layer).mixer_inputs(residual)
            for branch, inputs in ((mixer.attention, prepared.attention), (mixer.ssm, prepared.ssm)):
                error = (branch.terms(inputs).mixed() - branch.mix(inputs).float()).abs().max().item()
                assert error <= 1e-5


def test_attention_features_are_transformers_attention_weights(pair):
    """The first H_a features of the composite matrix are transformers' own attention probabilities."""
    theirs, ours = pair
    input_ids = prompt(9, seed=4)
    with torch.no_grad():
        expected = theirs(input_ids, output_attentions=True).attentions  # per layer [B, H_a, T, T]
        for layer in range(ours.n_layers):
            matrix = ours.hidden_attention(input_ids, layer)
            heads = ours.mixer(layer).attention.n_features
            assert matrix.shape[1] == ours.mixer(layer).n_features
            assert (matrix[:, :heads] - expected[layer]).abs().max().item() <= 1e-5


def test_ssm_features_are_the_plain_recurrence(pair):
    """The SSM heads' hidden attention times values equals the recurrence h_t = e^(Delta a) h_(t-1) + Delta x B^T,
    y = h C + D x, run step by step on the same inputs."""
    _, ours = pair
    input_ids = prompt(10, seed=5, batch=1)
    with torch.no_grad():
        residual = ours.residual_stream(input_ids)[1]
        mixer = ours.mixer(1)
        p = ours.block(1).mixer_inputs(residual).ssm
        state = torch.zeros(mixer.ssm.n_features, mixer.ssm.head_dim, mixer.ssm.d_state)  # [H, P, N]
        steps = []
        for t in range(input_ids.shape[1]):
            decay = torch.exp(p.delta[0, t] * mixer.ssm.A)[:, None, None]  # [H, 1, 1]
            write = (p.delta[0, t, :, None] * p.x[0, t])[..., None] * p.B[0, t, :, None, :]  # [H, P, N]
            state = decay * state + write
            steps.append(torch.einsum("hpn,hn->hp", state, p.C[0, t]) + mixer.ssm.D[:, None] * p.x[0, t])
        recurrence = torch.stack(steps)  # [T, H_s, P_s]
        mixed = mixer.terms(ours.block(1).mixer_inputs(residual)).mixed()[0]  # [T, H_a + H_s, P]
    assert (mixed[:, mixer.attention.n_features :, : mixer.ssm.head_dim] - recurrence).abs().max().item() <= 1e-5


def hand_knocked_layer(layer, hidden, position_embeddings, attention_mask, ssm_edges, zero_delta):
    """transformers' ``FalconH1DecoderLayer`` on hidden [1, T, D]: the attention branch under the additive mask
    ``attention_mask`` [1, 1, T, T], the SSM branch with M[t, s] = 0 for ``ssm_edges`` by explicit sums over s
    (with ``zero_delta``, row t also sees Delta = 0 at its blocked sources)."""
    u = layer.input_layernorm(hidden)
    mixer = layer.mamba
    projected = mixer.in_proj(u * mixer.ssm_in_multiplier) * mixer.mup_vector
    y, z = (v[None] for v in hand_ssd(mixer, projected[0], ssm_edges, zero_delta))
    gated = mixer.norm(y, z) if mixer.mamba_rms_norm else y * F.silu(z)
    ssm = mixer.out_proj(gated) * layer.ssm_out_multiplier
    attention, _ = layer.self_attn(
        u * layer.attention_in_multiplier, attention_mask=attention_mask, position_embeddings=position_embeddings
    )
    hidden = hidden + ssm + attention * layer.attn_out_multiplier
    return hidden + layer.feed_forward(layer.pre_ff_layernorm(hidden))


def hand_knocked_logits(theirs, input_ids, edges, kinds, zero_delta):
    """Logits [T, V] of transformers' modules with ``edges`` blocked in every layer, in the branches ``kinds``."""
    seq_len = input_ids.shape[1]
    mask = torch.full((seq_len, seq_len), torch.finfo(torch.float32).min).triu(1)
    if kinds is None or MixerKind.ATTENTION in kinds:
        for t, s in edges:
            mask[t, s] = torch.finfo(torch.float32).min
    ssm_edges = edges if kinds is None or MixerKind.SSD in kinds else set()
    model = theirs.model
    hidden = model.embed_tokens(input_ids) * model.embedding_multiplier
    position_embeddings = model.rotary_emb(hidden, torch.arange(seq_len)[None])
    for layer in model.layers:
        hidden = hand_knocked_layer(layer, hidden, position_embeddings, mask[None, None], ssm_edges, zero_delta)
    return (theirs.lm_head(model.final_layernorm(hidden)) * model.lm_head_multiplier)[0]


BRANCHES = {"both": None, "attention": frozenset({MixerKind.ATTENTION}), "ssm": frozenset({MixerKind.SSD})}


@pytest.mark.parametrize("mode", sorted(ParallelMixer.knockout_modes))
def test_knockout_in_both_branches_or_one_equals_hand_computation(pair, mode):
    theirs, ours = pair
    edges = {(6, 2), (6, 4), (4, 1), (3, 3)}
    input_ids = prompt(7, seed=5)[:1]
    knocked = {}
    with torch.no_grad():
        clean = ours(input_ids)[0]
        for branch, kinds in BRANCHES.items():
            features = FeatureSelection(kinds=kinds)
            knockout = Knockout(edges=tuple(edges), layers=(0, 1), mode=mode, features=features)
            knocked[branch] = knocked_logits(ours, input_ids, knockout)[0]
            expected = hand_knocked_logits(theirs, input_ids, edges, kinds, mode is KnockoutMode.ZERO_DELTA)
            assert (knocked[branch] - expected).abs().max().item() <= 1e-4
            assert torch.equal(knocked[branch][[0, 1, 2]], clean[[0, 1, 2]])  # before the first target: clean
    targets = [3, 4, 6]
    for one, other in (("both", "attention"), ("both", "ssm"), ("attention", "ssm")):
        assert (knocked[one][targets] - knocked[other][targets]).abs().amax(-1).min().item() > 1e-4


def test_decay_categories_rank_the_ssm_heads_and_knock_out_every_attention_head(pair):
    _, ours = pair
    mixer = ours.mixer(0)
    heads, norms = mixer.attention.n_features, mixer.ssm.decay_norms()
    slow = exempt_features(ours, 0, FeatureSelection(FeatureCategory.SLOW_DECAY, exempt_fraction=0.5))
    assert not slow[:heads].any()
    assert slow[heads:].sum() == norms.numel() // 2 and norms[slow[heads:]].min() >= norms[~slow[heads:]].max()
    only_attention = exempt_features(ours, 0, FeatureSelection(FeatureCategory.SLOW_DECAY, kinds={MixerKind.ATTENTION}))
    assert not only_attention[:heads].any() and only_attention[heads:].all()
    assert exempt_features(ours, 0, FeatureSelection()) is None


def test_kinds_the_model_lacks_are_refused(pair):
    _, ours = pair
    knockout = Knockout.between([3], [1], [0], features=FeatureSelection(kinds={MixerKind.SELECTIVE_SCAN}))
    with pytest.raises(ValueError, match="mixer kinds selective_scan that this falcon_h1 model lacks"):
        knocked_logits(ours, prompt(4), knockout)


def test_fast_engine_matches_reference_in_one_branch(tiny_model_factory):
    assert_kind_restricted_engines_agree(tiny_model_factory("falcon_h1"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_both_engines(tiny_model_factory, dtype):
    assert_half_precision_engines_agree(tiny_model_factory("falcon_h1"), dtype)
