"""Every family in bf16 and fp16 on both engines: loaded in the half dtype through the real loader, a small
knockout sweep gives the same numbers on the fast and the reference engine, and close to the fp32 numbers.

Tolerances are in units of the dtype's machine epsilon (bf16 2^-7, fp16 2^-10) on next-token probabilities;
docs/performance.md ("Precision") lists what each family showed. The two engines round at different places
(the clean mixing in the half dtype with SDPA or a scan, the knocked-out rows in fp32 from the materialised
hidden attention), so in a half dtype they agree to rounding, not bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from infoflow.engines.fast import FastEngine
from infoflow.engines.reference import ReferenceEngine
from infoflow.interventions.knockout import Knockout, KnockoutMode
from infoflow.models.base import CausalLM
from infoflow.models.loading import load_hf_folder
from tests.conftest import TINY_MODELS, TINY_VOCAB, supports_strict

HALF_DTYPES = (torch.bfloat16, torch.float16)
# in units of the half dtype's eps; about twice the most observed in any family (docs/performance.md)
ENGINES_TOLERANCE = 2.0  # max |p_fast - p_reference| in the same half dtype
FP32_TOLERANCE = 4.0  # max |p - p_fp32| of either engine
# families whose half-precision forward rounds further from fp32 (twice the most seen): the tiny Qwen3-Next
# (gated delta rule, offset norms, MoE with a shared expert) reaches 5.2 eps in fp16 and 2.8 eps in bf16
FP32_TOLERANCE_OF = {"qwen3_next": 11.0}
SEQ_LEN, WINDOW = 9, 2
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))]


def sweep(model: CausalLM) -> list[Knockout | None]:
    """The clean run and target <- a few sources in every window of size 2, for the last and a middle target;
    on state-space models also in zero-delta mode, and strict where some layer has short-range taps."""
    options: list[dict] = [{}]
    if model.has_decay_features:
        options += [{"mode": KnockoutMode.ZERO_DELTA}]
    if supports_strict(model):
        options += [{"strict": True}]
    last, middle = SEQ_LEN - 1, SEQ_LEN // 2
    return [
        None,
        *(
            Knockout.between([target], sources, range(start, start + WINDOW), **option)
            for option in options
            for target in (last, middle)
            for sources in ([0], [1, target - 1, target])
            for start in range(model.n_layers - WINDOW + 1)
        ),
    ]


@pytest.fixture(scope="module")
def fp32_probabilities(tiny_model_factory):
    """name -> (prompt [T], knockouts, reference-engine probabilities [K, V] of the fp32 model)."""
    cache: dict[str, tuple[torch.Tensor, list[Knockout | None], torch.Tensor]] = {}

    def get(name: str) -> tuple[torch.Tensor, list[Knockout | None], torch.Tensor]:
        if name not in cache:
            model = tiny_model_factory(name)
            input_ids = torch.randint(0, TINY_VOCAB, (SEQ_LEN,), generator=torch.Generator().manual_seed(5))
            knockouts = sweep(model)
            cache[name] = input_ids, knockouts, ReferenceEngine(model).probabilities(input_ids, knockouts)
        return cache[name]

    return get


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_half_precision_engines_agree_and_stay_close_to_fp32(
    name, dtype, device, tiny_folder_factory, fp32_probabilities
):
    """Loaded in the half dtype on ``device`` (fp32 numbers: the reference engine on the CPU)."""
    input_ids, knockouts, fp32 = fp32_probabilities(name)
    model, _ = load_hf_folder(tiny_folder_factory(name), dtype=dtype, device=device)
    assert all(parameter.dtype == dtype for parameter in model.parameters())
    eps = torch.finfo(dtype).eps
    reference = ReferenceEngine(model).probabilities(input_ids, knockouts).cpu()
    fast = FastEngine(model, max_batch=8).probabilities(input_ids, knockouts).cpu()
    assert torch.isfinite(reference).all() and torch.isfinite(fast).all()
    assert (fast - reference).abs().max().item() <= ENGINES_TOLERANCE * eps
    for probabilities in (reference, fast):
        assert (probabilities - fp32).abs().max().item() <= FP32_TOLERANCE_OF.get(name, FP32_TOLERANCE) * eps
