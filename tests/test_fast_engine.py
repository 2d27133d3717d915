"""The fast engine gives the reference engine's numbers (fp32: max abs difference of probabilities <= 1e-5)."""

from __future__ import annotations

import copy
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from infoflow.engines import fast as fast_module
from infoflow.engines.fast import FastEngine, Tail, TailGroup
from infoflow.engines.reference import ReferenceEngine
from infoflow.interventions.knockout import FeatureCategory, FeatureSelection, Knockout, KnockoutMode
from infoflow.models.tails import TailRows
from tests.attention_checks import assert_tail_and_rows_consistent
from tests.conftest import TINY_VOCAB, supported_modes, supports_strict

N_LAYERS = 4
TOLERANCE = 1e-5


@st.composite
def sweeps(draw, model, seq_len: int | None = None):
    """A prompt and a list of knockouts with any targets, modes, strictness and feature categories."""
    ssm = model.has_decay_features
    seq_len = draw(st.integers(1, 9)) if seq_len is None else seq_len
    input_ids = torch.tensor(draw(st.lists(st.integers(0, TINY_VOCAB - 1), min_size=seq_len, max_size=seq_len)))
    positions = st.lists(st.integers(0, seq_len - 1), min_size=0, max_size=seq_len, unique=True)
    window_size = draw(st.integers(1, N_LAYERS))
    knockouts = []
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, N_LAYERS - window_size))
        options = {}
        if ssm:
            options = {
                "mode": draw(st.sampled_from(supported_modes(model))),
                "strict": draw(st.booleans()) and supports_strict(model),
                "features": FeatureSelection(draw(st.sampled_from(list(FeatureCategory)))),
            }
        layers = range(start, start + window_size)
        knockouts.append(Knockout.between(draw(positions), draw(positions), layers, **options))
    return input_ids, knockouts


def assert_engines_agree(model, input_ids, knockouts):
    fast = FastEngine(model, max_batch=3).probabilities(input_ids, knockouts)
    reference = ReferenceEngine(model).probabilities(input_ids, knockouts)
    assert (fast - reference).abs().max().item() <= TOLERANCE


@settings(max_examples=30, deadline=None, derandomize=True)
@given(data=st.data())
def test_fast_engine_matches_reference(tiny_model, data):
    input_ids, knockouts = data.draw(sweeps(tiny_model))
    assert_engines_agree(tiny_model, input_ids, [None, *knockouts])


@settings(max_examples=20, deadline=None, derandomize=True)
@given(data=st.data())
def test_knockouts_of_several_prompts_batched_together(tiny_model, data):
    """Tail passes mixing rows of several prompts (any batch size) give each prompt the reference numbers."""
    seq_len = data.draw(st.integers(1, 9))
    requests = [data.draw(sweeps(tiny_model, seq_len)) for _ in range(data.draw(st.integers(2, 4)))]
    engine = FastEngine(tiny_model, max_batch=data.draw(st.integers(1, 12)), max_prompts=data.draw(st.integers(1, 4)))
    reference = ReferenceEngine(tiny_model)
    for (input_ids, knockouts), fast in zip(requests, engine.probabilities_many(requests), strict=True):
        assert (fast - reference.probabilities(input_ids, knockouts)).abs().max().item() <= TOLERANCE


def test_out_of_memory_halves_the_batch_and_loses_nothing(tiny_model, monkeypatch):
    """A tail pass that runs out of GPU memory is retried in halves (with a warning) until it fits."""
    passes = []
    real_run_tails = FastEngine.run_tails

    def run_tails(self, group, tails):
        passes.append(len(tails))
        if len(tails) > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_run_tails(self, group, tails)

    monkeypatch.setattr(FastEngine, "run_tails", run_tails)
    input_ids = torch.tensor([3, 14, 15, 9, 26, 5, 35])
    knockouts = [Knockout.between([6], [s], range(w, w + 2)) for s in range(7) for w in range(N_LAYERS - 1)]
    with pytest.warns(UserWarning, match="knockout batch size lowered to 4"):
        fast = FastEngine(tiny_model, max_batch=16).probabilities(input_ids, knockouts)
    assert passes[:3] == [16, 8, 4] and max(passes[3:]) <= 4 and sum(passes[2:]) == len(knockouts)
    assert (fast - ReferenceEngine(tiny_model).probabilities(input_ids, knockouts)).abs().max().item() <= TOLERANCE


def simulate_cuda(monkeypatch: pytest.MonkeyPatch, peak: int, free: int) -> None:
    """The fast engine sees a CUDA device with ``free`` bytes, and every pass peaks at ``peak`` bytes."""
    monkeypatch.setattr(FastEngine, "device", property(lambda self: torch.device("cuda")))
    monkeypatch.setattr(fast_module, "to_device_async", lambda tensor, device: tensor)
    simulated = {
        "synchronize": lambda *a: None, "reset_peak_memory_stats": lambda *a: None, "empty_cache": lambda *a: None,
        "memory_allocated": lambda *a: 0, "memory_reserved": lambda *a: 0,
        "max_memory_allocated": lambda *a: peak, "mem_get_info": lambda *a: (free, 80 * 2**30),
    }  # fmt: skip
    for name, function in simulated.items():
        monkeypatch.setattr(torch.cuda, name, function)


def test_gpu_batch_sizing_keeps_what_out_of_memory_taught(monkeypatch):
    """With --batch-size auto on a GPU (simulated: memory for about 100 rows of 1000 bytes, passes over 64 rows
    run out of memory): the first clean batch measures and halves down to 64 rows; later clean batches start
    there instead of running out of memory again."""
    simulate_cuda(monkeypatch, peak=256 * 1000, free=100 * 1000)
    passes = []

    def run_tails(self, group, tails):
        passes.append(len(tails))
        if len(tails) > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return torch.zeros(len(tails), 3)

    monkeypatch.setattr(FastEngine, "run_tails", run_tails)
    engine = FastEngine(types.SimpleNamespace())
    group = TailGroup(types.SimpleNamespace(stream=[torch.zeros(1, 7, 2)]), None, 6, KnockoutMode.ZERO_ATTENTION, False)
    tails = [Tail(0, slot, 0, frozenset({0}), FeatureSelection()) for slot in range(300)]
    with pytest.warns(UserWarning, match="lowered to 64"):
        engine.run_in_batches(group, tails, torch.ones(300, 3))
    assert passes == [256, 128, 64, 64, 64, 64, 44]
    passes.clear()
    out = torch.ones(300, 3)
    engine.run_in_batches(group, tails, out)
    assert passes == [64, 64, 64, 64, 44] and out.eq(0).all()


def test_tail_row_memory_measured_once_serves_prompts_of_similar_length(monkeypatch):
    """A row's memory measured on 8-token prompts sizes the passes of 12-token prompts (scaled by 12/8, an upper
    bound) and of shorter ones without another sizing pass; 20-token prompts (over twice as long) are measured."""
    simulate_cuda(monkeypatch, peak=256 * 1000, free=1000 * 1000)  # 1000 bytes per row measured; 800 rows fit
    passes = []

    def run_tails(self, group, tails):
        passes.append(len(tails))
        return torch.zeros(len(tails), 3)

    monkeypatch.setattr(FastEngine, "run_tails", run_tails)
    engine = FastEngine(types.SimpleNamespace())
    tails = [Tail(0, slot, 0, frozenset({0}), FeatureSelection()) for slot in range(2000)]

    def run(seq_len: int) -> list[int]:
        passes.clear()
        group = TailGroup(types.SimpleNamespace(stream=[torch.zeros(1, seq_len, 2)]), None, seq_len - 1,
                          KnockoutMode.ZERO_ATTENTION, False)  # fmt: skip
        engine.run_in_batches(group, tails, torch.ones(2000, 3))
        return list(passes)

    assert run(8) == [256, 800, 800, 144]  # the sizing pass, then 0.8 * free / 1000 bytes
    assert run(12) == [533, 533, 533, 401]  # 1500 bytes a row: 800 * 8 / 12
    assert run(5) == [800, 800, 400]
    assert run(20) == [256, 800, 800, 144]  # measured again
    assert engine.row_bytes == {(1, KnockoutMode.ZERO_ATTENTION, False): {8: 1000.0, 20: 1000.0}}


def test_blocked_rows_are_the_knockouts_blocked_matrices():
    """All edge sets' target rows at once equal ``Knockout.blocked_matrix`` of each (non-causal edges and edges
    into targets before the first row left out)."""
    generator = torch.Generator().manual_seed(0)
    for seq_len in (1, 2, 7):
        for start in range(seq_len):
            edge_sets = [
                tuple((int(t), int(s)) for t, s in torch.randint(0, seq_len, (int(n), 2), generator=generator))
                for n in torch.randint(0, 6, (5,), generator=generator)
            ]
            expected = torch.stack([Knockout(e, ()).blocked_matrix(seq_len, first_row=start) for e in edge_sets])
            assert torch.equal(fast_module.blocked_rows(edge_sets, seq_len, start), expected)


def test_a_runner_hands_a_gpu_several_clean_passes_at_once(monkeypatch):
    engine = FastEngine(types.SimpleNamespace(lm_head=torch.nn.Linear(2, 3)), max_prompts=16)
    assert engine.prompts_per_call == 16  # on the CPU: one clean pass
    monkeypatch.setattr(FastEngine, "device", property(lambda self: torch.device("cuda")))
    assert engine.prompts_per_call == 16 * fast_module.GPU_PASSES_PER_CALL


@pytest.mark.parametrize(
    ("knockout", "error"),
    [
        (Knockout(((2, 50),), (0,)), "lie outside a prompt of 5 tokens"),
        (Knockout(((1, 3),), (99,)), "do not exist"),  # blocks nothing (3 > 1) but names a missing layer
        (Knockout(((1, 3),), (0,), mode=KnockoutMode.ZERO_DELTA), "supported by no layer"),
    ],
)
def test_invalid_knockouts_are_refused_as_the_reference_refuses_them(tiny_model, knockout, error):
    if tiny_model.has_decay_features and knockout.mode is KnockoutMode.ZERO_DELTA:
        pytest.skip("state-space models accept every mode")
    input_ids = torch.tensor([3, 14, 15, 9, 26])
    for engine in (FastEngine(tiny_model), ReferenceEngine(tiny_model)):
        with pytest.raises(ValueError, match=error):
            engine.probabilities(input_ids, [None, knockout])


def test_info_flow_sweep_with_target_last(tiny_model):
    """The paper's sweep shape: last <- {subject, relation, last, first} in every window of size 2."""
    input_ids = torch.tensor([3, 14, 15, 9, 26, 5, 35])
    last = len(input_ids) - 1
    sources = {"subject": [1, 2, 3], "relation": [0, 4, 5, 6], "last": [last], "first": [0]}
    knockouts = [
        Knockout.between([last], positions, range(start, start + 2))
        for positions in sources.values()
        for start in range(N_LAYERS - 1)
    ]
    assert_engines_agree(tiny_model, input_ids, knockouts)


def test_tails_and_rows_agree_with_the_full_prompt(tiny_model):
    """``prepare_tail`` equals ``prepare`` of the whole prompt; ``terms`` for some rows are those rows."""
    assert_tail_and_rows_consistent(tiny_model)


def test_prompts_batched_by_length_match_one_by_one(tiny_model):
    """Prompts of mixed lengths in one call (clean runs batched per length) give each prompt's own numbers."""
    generator = torch.Generator().manual_seed(11)
    requests = []
    for length in (5, 7, 5, 3, 5):
        input_ids = torch.randint(0, TINY_VOCAB, (length,), generator=generator)
        last = length - 1
        knockouts = [Knockout.between([last], [1, 2], range(s, s + 2)) for s in range(N_LAYERS - 1)]
        requests.append((input_ids, [None, *knockouts]))
    batched = FastEngine(tiny_model, max_batch=4, max_prompts=2).probabilities_many(requests)
    reference = ReferenceEngine(tiny_model)
    for (input_ids, knockouts), fast in zip(requests, batched, strict=True):
        assert (fast - reference.probabilities(input_ids, knockouts)).abs().max().item() <= TOLERANCE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_engine_on_cuda_matches_reference(tiny_model):
    """On a GPU (fused Mamba-1 read-out, batch sized from free memory): the info-flow sweep of several prompts,
    with feature categories on state-space models, gives the reference engine's numbers."""
    model = copy.deepcopy(tiny_model).to("cuda")
    generator = torch.Generator().manual_seed(3)
    categories = list(FeatureCategory) if model.has_decay_features else [FeatureCategory.ALL]
    last = 6
    knockouts = [
        Knockout.between([last], sources, range(start, start + 2), features=FeatureSelection(category))
        for sources in ([1, 2], [0, 3, 4, 5, 6], [last], [0])
        for start in range(N_LAYERS - 1)
        for category in categories
    ]
    requests = [(torch.randint(0, TINY_VOCAB, (7,), generator=generator), [None, *knockouts]) for _ in range(5)]
    reference = ReferenceEngine(model)
    for (input_ids, plan), fast in zip(requests, FastEngine(model).probabilities_many(requests), strict=True):
        assert (fast - reference.probabilities(input_ids, plan)).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_tail_conv_rounds_as_the_clean_conv_in_bf16(tiny_model_factory, family):
    """In bf16 a tail's conv inputs (its own part plus its prompts' clean part) equal the clean run's, bit for
    bit: both parts are summed in fp32 and rounded once, as the clean conv."""
    model = copy.deepcopy(tiny_model_factory(family)).to(torch.bfloat16)
    mixer = model.mixer(0)
    with torch.no_grad():
        mixer.conv1d.weight.normal_(generator=torch.Generator().manual_seed(0))
        hidden = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
        full = mixer.prepare(hidden)
        for start in (1, 5, 7):
            tail = mixer.prepare_tail(hidden[:, start:], full, start, TailRows.of([0, 1], 2, hidden.device))
            assert torch.equal(tail.x, full.x[:, start:])
