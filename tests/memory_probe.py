"""Measure chunk jobs' peak memory next to their prediction, in a process of its own (run by
``tests/test_reliability_memory.py``): ``python -m tests.memory_probe MODEL:KIND:LENGTH,... ...`` prints one JSON
line per length, {"model", "kind", "tokens", "predicted", "measured"} in bytes.

The measured peak is the most anonymous resident memory (RssAnon: what allocations hold, not the pages of
libraries and files, which the kernel drops and reads again under memory pressure) seen during the job, sampled
every millisecond, less that before it; before each job the C allocator returns its free memory to the system
(glibc's ``malloc_trim``), so that what the job reuses is counted.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import sys
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from infoflow.data import FactPrompt, load_dataset
from infoflow.data.spans import find_spans_many
from infoflow.engines.base import Engine, make_engine
from infoflow.experiments.attention import AttentionParams, attention_job
from infoflow.experiments.evaluate import EvaluateParams, evaluation_job
from infoflow.experiments.heatmap import HeatmapParams, heatmap_job
from infoflow.experiments.info_flow import InfoFlowParams, info_flow_job
from infoflow.models import load_model
from infoflow.models.load import LoadedModel


@dataclass
class Context:
    loaded: LoadedModel
    engine: Engine


def anonymous() -> int:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("RssAnon:"))


class PeakSampler(threading.Thread):
    """The most anonymous resident memory seen while it runs, sampled every millisecond."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = anonymous()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.001):
            self.peak = max(self.peak, anonymous())

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, anonymous())


def long_prompt(tokens: int) -> FactPrompt:
    """A synthetic fact after ``tokens`` filler words (one token each in the built-in tokenizer)."""
    fact = load_dataset("synthetic")[0]
    return FactPrompt(prompt_id=tokens, prompt=" ".join(["the"] * tokens) + " " + fact.prompt, subject=fact.subject,
                      target=fact.target)  # fmt: skip


JOBS = {
    "info_flow": lambda n_layers: partial(info_flow_job, InfoFlowParams(window_sizes=(n_layers // 2,))),
    "heatmap": lambda n_layers: partial(heatmap_job, HeatmapParams(n_layers // 2)),
    "evaluate": lambda n_layers: partial(evaluation_job, EvaluateParams()),
    "attention": lambda n_layers: partial(attention_job, AttentionParams(tuple(range(n_layers)))),
}


def trim() -> None:
    """Give the C allocator's free memory back to the system (glibc; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def probe(model: str, kind: str, lengths: list[int]) -> None:
    loaded = load_model(model)
    engine = make_engine("reference" if kind == "attention" else "fast", loaded.model)
    job = JOBS[kind](loaded.model.n_layers)(Context(loaded, engine))
    for tokens in [8, *lengths]:  # the first: a warm-up (lazy initialisation, thread pools)
        prompt = long_prompt(tokens)
        chunk = [(prompt, find_spans_many(loaded.tokenizer, [prompt])[0])]
        predicted = job.needs(chunk)
        gc.collect()
        trim()
        before = anonymous()
        sampler = PeakSampler()
        sampler.start()
        results = job(chunk)
        measured = sampler.stop() - before
        assert not any(isinstance(r, Exception) for r in results), results
        del results
        if tokens != 8:
            tokens = chunk[0][1].num_tokens
            print(json.dumps({"model": model, "kind": kind, "tokens": tokens, "predicted": predicted,
                              "measured": measured}), flush=True)  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)
    for spec in sys.argv[1:]:
        name, kind, lengths = spec.split(":")
        probe(name, kind, [int(n) for n in lengths.split(",")])
