"""Patches (sublayer knockouts, restorations on a corrupted run) on every family: the fast patch engine gives the
reference engine's numbers (fp32 within 1e-5; a half dtype within rounding); the reference path against
independent oracles: transformers' own modules with a forward hook, and what restoring a whole layer must give.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from infoflow.engines.patching import FastPatchEngine, PatchRequest, ReferencePatchEngine
from infoflow.interventions.patching import Corruption, Patch, check_sites, embedding_std
from infoflow.models.base import CausalLM
from infoflow.models.loading import load_hf_folder
from infoflow.models.modes import Site
from tests.conftest import TINY_MODELS, TINY_VOCAB

SEQ_LEN = 7
TOLERANCE = 1e-5
HALF_TOLERANCE = 2.0  # in units of the half dtype's eps, as tests/test_precision.py


def prompt() -> torch.Tensor:
    return torch.randint(0, TINY_VOCAB, (SEQ_LEN,), generator=torch.Generator().manual_seed(3))


def patches(model: CausalLM) -> list[Patch | None]:
    """Knockouts and restorations of each site: a single layer and a window, at the last position and at
    several; and the base run (None)."""
    last, middle = SEQ_LEN - 1, 2
    windows = [(0,), (1, model.n_layers - 1)]
    return [
        None,
        *(
            Patch(site, layers, positions, restore)
            for site in Site
            for layers in windows
            for positions in ((last,), (middle, last - 1))
            for restore in (False, True)
        ),
    ]


def request(model: CausalLM, samples: int = 2) -> PatchRequest:
    width = model.embed(prompt()[None]).shape[-1]
    noise = Corruption(positions=(1, 2, 3), std=3.0, samples=samples, seed=11).noise(SEQ_LEN, width)
    return PatchRequest(prompt(), target=5, patches=patches(model), noise=noise)


def test_fast_patch_engine_matches_reference(tiny_model):
    """On the noised runs (restorations bring clean values) and on the clean run (knockouts)."""
    for noised in (request(tiny_model), PatchRequest(prompt(), 5, patches(tiny_model))):
        fast = FastPatchEngine(tiny_model, max_batch=5).probabilities(noised)
        reference = ReferencePatchEngine(tiny_model).probabilities(noised)
        assert (fast - reference).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_fast_patch_engine_matches_reference_in_half_precision(name, dtype, tiny_folder_factory):
    model, _ = load_hf_folder(tiny_folder_factory(name), dtype=dtype)
    noised = request(model, samples=1)
    noised = PatchRequest(noised.input_ids, 5, noised.patches[::2], noised.noise)
    fast = FastPatchEngine(model).probabilities(noised)
    reference = ReferencePatchEngine(model).probabilities(noised)
    assert torch.isfinite(fast).all() and torch.isfinite(reference).all()
    assert (fast - reference).abs().max().item() <= HALF_TOLERANCE * torch.finfo(dtype).eps


def test_base_runs_and_unchanged_patches_are_the_plain_forward(tiny_model):
    """None, a patch of no layer and one of no position give the model's own output on the (noised) embeddings."""
    noised = request(tiny_model)
    nothing = [None, Patch(Site.MIXER, (), (1,)), Patch(Site.RESIDUAL, (1,), (), restore=True)]
    noised = PatchRequest(noised.input_ids, 5, nothing, noised.noise)
    with torch.no_grad():
        embedded = tiny_model.embed(prompt()[None]) + noised.noise
        expected = torch.softmax(tiny_model.unembed(tiny_model.stream_from(embedded)[-1])[:, -1], dim=-1)
    for engine in (FastPatchEngine(tiny_model), ReferencePatchEngine(tiny_model)):
        got = engine.probabilities(noised)  # [S, 3, V]
        assert (got - expected[:, None]).abs().max().item() <= TOLERANCE


def test_restoring_a_whole_layer_output_recovers_the_clean_run(tiny_model):
    """The residual stream restored at every position of one layer: every later layer sees the clean stream,
    so the output is the clean run's (and restoring it before the noise, at no corrupted position, changes
    nothing)."""
    noised = request(tiny_model)
    everywhere = Patch.restoration(Site.RESIDUAL, (1,), range(SEQ_LEN))
    before_subject = Patch.restoration(Site.RESIDUAL, (1,), (0,))
    noised = PatchRequest(noised.input_ids, 5, [None, everywhere, before_subject], noised.noise)
    with torch.no_grad():
        clean = torch.softmax(tiny_model(prompt()[None])[:, -1], dim=-1)  # [1, V]
    for engine in (FastPatchEngine(tiny_model), ReferencePatchEngine(tiny_model)):
        got = engine.probabilities(noised)
        assert (got[:, 1] - clean).abs().max().item() <= TOLERANCE
        assert (got[:, 2] - got[:, 0]).abs().max().item() <= TOLERANCE
        assert (got[:, 0] - clean).abs().max().item() > 10 * TOLERANCE  # the noise does change the output


# transformers' module whose output is the site's update in layer l, and how to zero it at one position
HOOKED = {
    "llama": {Site.MIXER: "model.layers.{}.self_attn", Site.MLP: "model.layers.{}.mlp"},
    "gpt2": {Site.MIXER: "transformer.h.{}.attn", Site.MLP: "transformer.h.{}.mlp"},
    "mamba": {Site.MIXER: "backbone.layers.{}.mixer"},
}


def zero_at(position: int):
    def hook(module, inputs, output):
        value = output[0] if isinstance(output, tuple) else output
        value = value.clone()
        value[:, position] = 0
        return (value, *output[1:]) if isinstance(output, tuple) else value

    return hook


@pytest.mark.parametrize("name", sorted(HOOKED))
def test_sublayer_knockout_matches_a_hook_on_transformers_modules(name, tiny_folder_factory, tiny_model_factory):
    """Zeroing the update of transformers' own attention/mixer or MLP module at one position in a window of
    layers gives our knockout's probabilities."""
    theirs = AutoModelForCausalLM.from_pretrained(tiny_folder_factory(name)).eval()
    ours = tiny_model_factory(name)
    position = SEQ_LEN - 2
    for site, path in HOOKED[name].items():
        handles = [
            theirs.get_submodule(path.format(layer)).register_forward_hook(zero_at(position)) for layer in (1, 2)
        ]
        with torch.no_grad():
            expected = torch.softmax(theirs(prompt()[None]).logits[:, -1], dim=-1)
        for handle in handles:
            handle.remove()
        knockout = PatchRequest(prompt(), 5, [Patch.knockout(site, (1, 2), (position,))])
        got = ReferencePatchEngine(ours).probabilities(knockout)[0]
        assert (got - expected).abs().max().item() <= TOLERANCE


def test_bad_patches_are_refused_with_the_fix(tiny_model_factory):
    model = tiny_model_factory("mamba")
    with pytest.raises(ValueError, match="have no MLP; leave out the site mlp"):
        check_sites(model, [Site.MLP])
    with pytest.raises(ValueError, match="layers \\[9\\] do not exist"):
        ReferencePatchEngine(model).probabilities(PatchRequest(prompt(), 5, [Patch.knockout("mixer", (9,), (1,))]))
    with pytest.raises(ValueError, match="outside a prompt of 7 tokens"):
        FastPatchEngine(model).probabilities(PatchRequest(prompt(), 5, [Patch.knockout("mixer", (1,), (7,))]))
    with pytest.raises(ValueError, match="unknown site 'attention'; choose residual, mixer, mlp"):
        Patch.knockout("attention", (1,), (1,))


def test_noise_is_seeded_and_scaled():
    corruption = Corruption(positions=(1, 2), std=0.5, samples=3, seed=4)
    noise = corruption.noise(5, 8)
    assert torch.equal(noise, corruption.noise(5, 8))
    assert not torch.equal(noise, Corruption((1, 2), 0.5, 3, seed=5).noise(5, 8))
    assert noise[:, [0, 3, 4]].abs().max() == 0
    big = Corruption(positions=tuple(range(100)), std=0.5, samples=2, seed=1).noise(100, 50)
    assert abs(big.std().item() - 0.5) < 0.01


def test_embedding_std_is_the_std_of_the_embedded_tokens(tiny_model):
    ids = [3, 5, 7, 5]
    with torch.no_grad():
        expected = tiny_model.embed(torch.tensor([[3], [5], [7]])).float().std().item()
    assert embedding_std(tiny_model, ids) == pytest.approx(expected)


def test_out_of_memory_halves_the_patch_batch_and_loses_nothing(tiny_model_factory, monkeypatch):
    model = tiny_model_factory("llama")
    engine = FastPatchEngine(model, max_batch=8)
    real_run_rows, passes = FastPatchEngine.run_rows, []

    def run_rows(self, base, clean, start, site, rows):
        passes.append(len(rows))
        if len(rows) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_run_rows(self, base, clean, start, site, rows)

    monkeypatch.setattr(FastPatchEngine, "run_rows", run_rows)
    noised = request(model)
    with pytest.warns(UserWarning, match="patch batch size lowered to"):
        fast = engine.probabilities(noised)
    assert (fast - ReferencePatchEngine(model).probabilities(noised)).abs().max().item() <= TOLERANCE
    assert max(passes) == 8 and engine.max_batch == 2


def test_recorded_updates_add_up_to_the_layer_output_and_project_like_the_model(tiny_model):
    """Every family: out = (h + u (+ m)) * residual_scale (1 but in RWKV) at every layer whose updates live in
    the stream, and the logit lens of
    the last layer's output is the model's own output (what vocabulary projection reads)."""
    from infoflow.experiments.vocab_projection import projected_logits
    from infoflow.interventions.patching import record_sites

    ids = prompt()
    with torch.no_grad():
        recorded = record_sites(tiny_model, tiny_model.embed(ids[None]))
        logits = tiny_model(ids[None])[0]
    stream, sites = recorded.stream, recorded.sites
    checked = 0
    for layer in range(tiny_model.n_layers):
        update = sites[Site.MIXER][layer] + sites[Site.MLP].get(layer, 0)
        assert torch.equal(sites[Site.RESIDUAL][layer], stream[layer + 1])
        if update.shape == stream[layer].shape and tiny_model.family != "zamba2":
            scale = tiny_model.block(layer).residual_scale
            assert ((stream[layer] + update) * scale - stream[layer + 1]).abs().max().item() <= 1e-5
            checked += 1
    assert checked or tiny_model.family == "zamba2"
    projected = projected_logits(tiny_model, ids, [SEQ_LEN - 1, 2])
    assert (projected[(Site.RESIDUAL, tiny_model.n_layers - 1)][0] - logits[-1]).abs().max().item() <= 1e-5
    assert (projected[(Site.RESIDUAL, 0)][1] - tiny_model.unembed(stream[1][0, 2])).abs().max().item() <= 1e-5
