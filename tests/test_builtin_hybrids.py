"""The built-in hybrids (builtin-bamba: Mamba-2 + attention; builtin-qwen3.5: Gated DeltaNet + attention): they
train on the CPU, save a folder our loader reads (logits equal transformers'), and until their weights are shipped
a clear error names the command that trains them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from infoflow.builtin.configs import build_model
from infoflow.builtin.evaluate import evaluate_prompts
from infoflow.builtin.train import train_builtin
from infoflow.data.synthetic import SyntheticFacts
from infoflow.interventions.mixers import is_hybrid
from infoflow.models import load as load_module
from infoflow.models import registry
from infoflow.models.load import load_model
from infoflow.models.loading import ModelLoadError
from infoflow.models.modes import MixerKind

HYBRIDS = {
    "bamba": (MixerKind.SSD,) * 2 + (MixerKind.ATTENTION,) + (MixerKind.SSD,) * 2 + (MixerKind.ATTENTION,),
    "qwen3.5": ((MixerKind.GATED_DELTA,) * 3 + (MixerKind.ATTENTION,)) * 2,
}


@pytest.mark.parametrize("family", sorted(HYBRIDS))
def test_training_saves_a_hybrid_our_loader_reads(family: str, tmp_path: Path) -> None:
    metrics = train_builtin(family, tmp_path, steps=2, batch_size=4, n_entities=2, log_every=1)
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 2
    assert metrics["train_templates"]["n"] == 2 * 10 * 5 and 1_300_000 <= metrics["n_parameters"] <= 2_000_000
    loaded = load_model(str(tmp_path))
    assert loaded.model.layer_kinds[: len(HYBRIDS[family])] == HYBRIDS[family] and loaded.model.n_layers == 8
    assert is_hybrid(loaded.model)
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    prompts = SyntheticFacts(n_entities=2).eval_prompts(held_out=True)[:3]
    ids = loaded.tokenizer([prompts[0].prompt], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert (theirs(ids).logits - loaded.model(ids)).abs().max().item() <= 1e-4
    assert evaluate_prompts(theirs, loaded.tokenizer, prompts)["n"] == 3


@pytest.mark.parametrize("family", sorted(HYBRIDS))
def test_configs_are_small(family: str) -> None:
    """About 1.5 M parameters (6 MB in fp32), tied embeddings, like the other built-in models."""
    model = build_model(family, 1024, 0)
    assert 1_300_000 <= sum(p.numel() for p in model.parameters()) <= 1_600_000
    assert model.config.tie_word_embeddings and model.config.num_hidden_layers == 8


def test_missing_weights_name_the_training_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "BUILTIN_DIR", tmp_path)
    with pytest.raises(ModelLoadError, match=r"'builtin-qwen3.5' is not shipped .* train it with `python -m "
                       r"infoflow.builtin.train --family qwen3.5 --out .*qwen3.5`"):  # fmt: skip
        load_model("builtin-qwen3.5")


def test_figure_sets_take_the_shipped_builtins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "BUILTIN_DIR", tmp_path)
    for name in ("gpt2", "bamba"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    assert registry.shipped_builtins() == ("builtin-gpt2", "builtin-bamba")
    for alias in ("builtin-bamba", "builtin-qwen3.5"):
        registry.check_model_name(alias)  # known names before their weights exist


@pytest.mark.parametrize("alias", [a for a in ("builtin-bamba", "builtin-qwen3.5") if a in registry.shipped_builtins()])
def test_shipped_hybrids_recall_the_facts(alias: str) -> None:
    """Once trained (benchmarks/train_builtin_hybrids.sh): the shipped hybrid knows the facts, like the others."""
    loaded = load_model(alias)
    folder = Path(loaded.source)
    assert json.loads((folder / "metrics.json").read_text())["train_templates"]["top1"] >= 0.9
    prompts = SyntheticFacts().eval_prompts(held_out=False)[::150]
    assert evaluate_prompts(AutoModelForCausalLM.from_pretrained(folder), loaded.tokenizer, prompts)["top1"] >= 0.9
