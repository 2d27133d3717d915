"""The synthetic knowledge base, its tokenizer and a training smoke test (CPU, seconds)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from infoflow.builtin.configs import build_model
from infoflow.builtin.evaluate import evaluate_prompts
from infoflow.builtin.step import TrainStep, make_optimizer, sentence_loss
from infoflow.builtin.tokenizer import train_tokenizer
from infoflow.builtin.train import encode_sentences, train_builtin
from infoflow.data.errors import DatasetError
from infoflow.data.synthetic import SyntheticFacts, load_synthetic


@pytest.fixture(scope="module")
def facts() -> SyntheticFacts:
    return SyntheticFacts(seed=0, n_entities=120)


@pytest.fixture(scope="module")
def tokenizer(facts: SyntheticFacts) -> PreTrainedTokenizerBase:
    return train_tokenizer(facts)


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b, c = SyntheticFacts(seed=3, n_entities=50), SyntheticFacts(seed=3, n_entities=50), SyntheticFacts(seed=4)
    assert a.facts() == b.facts()
    assert a.training_texts() == b.training_texts()
    assert a.eval_prompts(held_out=True) == b.eval_prompts(held_out=True)
    assert a.names != c.names[:50]
    assert a.values != {relation: values[:50] for relation, values in c.values.items()}


def test_relations_values_are_balanced(facts: SyntheticFacts) -> None:
    assert len(facts.relations) >= 8
    for relation in facts.relations:
        counts = [facts.values[relation.name].count(value) for value in relation.values]
        assert len(counts) >= 5
        assert max(counts) - min(counts) <= 1  # the relation alone predicts a value at chance level


def test_names_are_unique_multi_word_and_not_prefixes(facts: SyntheticFacts) -> None:
    names = facts.names
    assert len(set(names)) == len(names) == facts.n_entities
    assert all(2 <= len(name.split()) <= 3 for name in names)
    assert not any(a != b and b.startswith(a + " ") for a in names for b in names)
    first_names = [name.split()[0] for name in names]
    assert len(set(first_names)) < len(first_names)  # shared first names: the whole name is needed


def test_one_target_per_subject_and_relation(facts: SyntheticFacts) -> None:
    targets: dict[tuple[str, str], set[str]] = defaultdict(set)
    for prompt in facts.eval_prompts(held_out=False) + facts.eval_prompts(held_out=True):
        targets[prompt.subject, prompt.relation].add(prompt.target)
    assert len(targets) == facts.n_entities * len(facts.relations)
    assert all(len(values) == 1 for values in targets.values())


def test_templates_both_orders_and_held_out_disjoint(facts: SyntheticFacts) -> None:
    train = [t for t in facts.templates if not t.held_out]
    held_out = [t for t in facts.templates if t.held_out]
    assert {t.text for t in train}.isdisjoint(t.text for t in held_out)
    for relation in facts.relations:
        for subset in (train, held_out):
            orders = {t.subject_first for t in subset if t.relation == relation.name}
            assert orders == {True, False}, relation.name
    train_prompts = {p.prompt for p in facts.eval_prompts(held_out=False)}
    assert train_prompts.isdisjoint(p.prompt for p in facts.eval_prompts(held_out=True))


def test_prompts_are_consistent(facts: SyntheticFacts) -> None:
    prompts = facts.eval_prompts(held_out=False) + facts.eval_prompts(held_out=True)
    assert len({p.prompt_id for p in prompts}) == len(prompts)
    for p in prompts:
        assert p.subject in p.prompt
        assert p.prompt.startswith(p.subject) == p.extras["subject_first"]
        assert p.target.startswith(" ") and not p.prompt.endswith(" ")
    assert set(facts.training_texts()) == {p.prompt + p.target + "." for p in facts.eval_prompts(held_out=False)}


def test_tokenizer_answers_single_subjects_multi_token(
    facts: SyntheticFacts, tokenizer: PreTrainedTokenizerBase
) -> None:
    for word in facts.answer_words():
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    for prompt in facts.eval_prompts(held_out=False)[:500]:
        ids = tokenizer(prompt.prompt, return_offsets_mapping=True)
        start = prompt.prompt.index(prompt.subject)
        subject_tokens = [s for s, e in ids["offset_mapping"] if e > start and s < start + len(prompt.subject)]
        assert len(subject_tokens) >= 2, prompt.prompt
        assert ids["input_ids"][0] == tokenizer.bos_token_id
        full = tokenizer(prompt.prompt + prompt.target)["input_ids"]  # prompt tokens, then the target token
        assert full == ids["input_ids"] + tokenizer(prompt.target, add_special_tokens=False)["input_ids"]


def test_tokenizer_is_deterministic_and_reloads(
    facts: SyntheticFacts, tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    assert train_tokenizer(facts).get_vocab() == tokenizer.get_vocab()
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = facts.training_texts()[7]
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]


@pytest.mark.parametrize("family", ["gpt2", "mamba2"])
def test_a_few_steps_reduce_the_loss(family: str) -> None:
    small = SyntheticFacts(seed=0, n_entities=10)
    tokenizer = train_tokenizer(small)
    ids, lengths = encode_sentences(tokenizer, small.training_texts()[:16])
    torch.manual_seed(0)
    model = build_model(family, len(tokenizer), tokenizer.eos_token_id).train()
    step = TrainStep(model, make_optimizer(model, lr=3e-3, weight_decay=0.0, graphed=False), tuple(ids.shape), False)
    with torch.no_grad():
        before = sentence_loss(model(ids).logits, ids, lengths).item()
    for _ in range(8):
        step(ids, lengths)
    with torch.no_grad():
        after = sentence_loss(model(ids).logits, ids, lengths).item()
    assert after < before - 0.5


def test_train_builtin_saves_a_loadable_folder(tmp_path: Path) -> None:
    metrics = train_builtin("gpt2", tmp_path, steps=3, batch_size=8, n_entities=8, log_every=1)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["steps"] == 3 and saved["train_templates"]["n"] == 8 * 10 * 5
    assert saved["held_out_templates"] == metrics["held_out_templates"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert sum(p.numel() for p in model.parameters()) == metrics["n_parameters"]
    assert AutoTokenizer.from_pretrained(tmp_path)("x")["input_ids"][0] == model.config.bos_token_id


def test_load_synthetic_dataset_splits() -> None:
    train, held_out = load_synthetic(), load_synthetic(split="held_out")
    assert train == SyntheticFacts().eval_prompts(held_out=False)
    assert len(train) == 300 * 10 * 5 and len(held_out) == 300 * 10 * 2
    with pytest.raises(DatasetError):
        load_synthetic(split="test")


MODELS = Path(__file__).resolve().parents[1] / "src" / "infoflow" / "builtin" / "models"


@pytest.mark.parametrize("family", ["mamba1", "mamba2", "gpt2", "llama"])
def test_trained_models_recall_the_facts(family: str) -> None:
    folder = MODELS / family
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["train_templates"]["top1"] >= 0.9
    assert 1_000_000 <= metrics["n_parameters"] <= 5_000_000
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.get_vocab() == train_tokenizer(SyntheticFacts()).get_vocab()  # the generator's tokenizer
    prompts = SyntheticFacts().eval_prompts(held_out=False)[::150]  # 100 prompts, every relation and template
    result = evaluate_prompts(AutoModelForCausalLM.from_pretrained(folder), tokenizer, prompts)
    assert result["top1"] >= 0.9


def test_trained_models_fit_the_size_budget() -> None:
    assert sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file()) <= 40_000_000
