"""Measure a chunk job's peak memory next to its prediction, in a process of its own (run by
``tests/test_reliability_memory.py``): ``python -m tests.memory_probe MODEL KIND LENGTH...`` prints one JSON
line per length, {"tokens", "predicted", "measured"} in bytes.

The measured peak is the process's peak resident memory (ru_maxrss) after the job less its resident memory
before it: an upper bound of what the job added at its peak (lengths run in increasing order, so each sets a new
peak; where one does not, the difference only overstates it).
"""

from __future__ import annotations

import json
import resource
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from infoflow.data import FactPrompt, load_dataset
from infoflow.data.spans import find_spans_many
from infoflow.engines.base import Engine, make_engine
from infoflow.experiments.experiments import attention_job, evaluation_job, heatmap_job, info_flow_job
from infoflow.experiments.plans import InfoFlowParams, KnockoutOptions
from infoflow.models import load_model
from infoflow.models.load import LoadedModel


@dataclass
class Context:
    loaded: LoadedModel
    engine: Engine


def resident() -> int:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def long_prompt(tokens: int) -> FactPrompt:
    """A synthetic fact after ``tokens`` filler words (one token each in the built-in tokenizer)."""
    fact = load_dataset("synthetic")[0]
    return FactPrompt(prompt_id=tokens, prompt=" ".join(["the"] * tokens) + " " + fact.prompt, subject=fact.subject,
                      target=fact.target)  # fmt: skip


JOBS = {
    "info_flow": lambda n_layers: partial(info_flow_job, InfoFlowParams(window_sizes=(n_layers // 2,))),
    "heatmap": lambda n_layers: partial(heatmap_job, n_layers // 2, KnockoutOptions()),
    "evaluate": lambda n_layers: partial(evaluation_job, 5),
    "attention": lambda n_layers: partial(attention_job, list(range(n_layers)), False),
}


def main(model: str, kind: str, lengths: list[int]) -> None:
    torch.set_num_threads(1)
    loaded = load_model(model)
    engine = make_engine("reference" if kind == "attention" else "fast", loaded.model)
    job = JOBS[kind](loaded.model.n_layers)(Context(loaded, engine))
    for tokens in [8, *lengths]:  # the first: a warm-up (lazy initialisation, thread pools)
        prompt = long_prompt(tokens)
        chunk = [(prompt, find_spans_many(loaded.tokenizer, [prompt])[0])]
        predicted = job.needs(chunk)
        before = resident()
        results = job(chunk)
        measured = peak() - before
        assert not any(isinstance(r, Exception) for r in results), results
        del results
        if tokens != 8:
            print(json.dumps({"tokens": chunk[0][1].num_tokens, "predicted": predicted, "measured": measured}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(n) for n in sys.argv[3:]])
