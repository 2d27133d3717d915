"""The facts behind a run's prompts (prompt text, subject, target), for the marks of heatmaps and prompt tables.

Heatmap and info-flow rows hold a prompt's id and tokens, not its subject or target. They come from the store's
evaluate rows of the same model and dataset where there are some, else from the dataset itself when it reads
offline (a built-in dataset or a local file); a prompt found in neither has no marks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from infoflow.store import ResultsStore

OFFLINE_DATASETS = ("synthetic",)  # named datasets that read without a download


@dataclass(frozen=True)
class Fact:
    prompt: str
    subject: str
    target: str


def dataset_facts(dataset: str) -> dict[int, Fact]:
    """{prompt_id: fact} of a dataset that reads offline (else empty: marks are optional)."""
    if dataset not in OFFLINE_DATASETS and not Path(dataset).is_file():
        return {}
    from infoflow.data import load_dataset

    try:
        prompts = load_dataset(dataset)
    except (OSError, ValueError):
        return {}
    return {p.prompt_id: Fact(p.prompt, p.subject, p.target) for p in prompts}


def run_facts(store: ResultsStore, run_id: str) -> dict[int, Fact]:
    """{prompt_id: fact} of a run's prompts: the evaluate rows of its model and dataset, then the dataset."""
    manifest = store.run(run_id).manifest
    runs = store.runs()
    evaluated = runs[(runs["kind"] == "evaluate") & (runs["model_id"] == manifest.model_id)]
    evaluated = evaluated[evaluated["dataset"] == manifest.dataset].sort_values("updated_at")
    facts = dataset_facts(manifest.dataset)
    for evaluate_id in evaluated["run_id"]:
        rows = store.frame(evaluate_id, "evaluate").dropna(subset=["prompt", "subject", "target"])
        facts |= {
            int(i): Fact(p, s, t)
            for i, p, s, t in zip(rows["prompt_id"], rows["prompt"], rows["subject"], rows["target"], strict=True)
        }
    return facts


def subject_positions(tokens: Sequence[str], prompt: str, subject: str) -> list[int]:
    """Positions of the tokens that overlap the subject's first occurrence in the prompt, found on the decoded
    tokens joined (special tokens such as BOS decode to text that is not in the prompt, and are skipped); empty
    when the decoded tokens do not spell the prompt."""
    text = "".join(tokens)
    start = text.find(prompt) if prompt else -1
    if start < 0:  # the decoded tokens do not spell the prompt
        return []
    where = prompt.find(subject)
    if not subject or where < 0:
        return []
    first, last = start + where, start + where + len(subject)
    positions, offset = [], 0
    for i, token in enumerate(tokens):
        end = offset + len(token)
        if end > first and offset < last and token.strip():
            positions.append(i)
        offset = end
    return positions


def with_facts(frame: pd.DataFrame, facts: dict[int, Fact]) -> pd.DataFrame:
    """``frame`` with columns ``fact_subject`` and ``fact_target`` (None where the prompt's fact is unknown)."""
    ids = frame["prompt_id"].astype(int)
    return frame.assign(
        fact_subject=[facts[i].subject if i in facts else None for i in ids],
        fact_target=[facts[i].target if i in facts else None for i in ids],
        fact_prompt=[facts[i].prompt if i in facts else None for i in ids],
    )
