"""Every experiment infoflow runs, by kind: the store makes a row table for each, and the runner, command line,
report and web app find an experiment here.

To add an experiment, write one module beside these (its parameters, job, columns and hooks in one
``Experiment``, as ``info_flow.py`` does) and add its ``EXPERIMENT`` below; docs/architecture.md has the checklist.
The order is the order of the report's sections.
"""

from __future__ import annotations

from typing import Any

from infoflow.experiments import (
    attention,
    causal_tracing,
    evaluate,
    heatmap,
    info_flow,
    sublayer_knockout,
    vocab_projection,
)
from infoflow.experiments.experiment import Experiment

EXPERIMENTS: dict[str, Experiment[Any]] = {
    e.kind: e
    for e in (
        evaluate.EXPERIMENT,
        info_flow.EXPERIMENT,
        heatmap.EXPERIMENT,
        attention.EXPERIMENT,
        sublayer_knockout.EXPERIMENT,
        causal_tracing.EXPERIMENT,
        vocab_projection.EXPERIMENT,
    )
}


def experiment(kind: str) -> Experiment[Any]:
    """The experiment of ``kind``; a ``ValueError`` naming the known ones for any other."""
    if kind not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {kind!r}; experiments: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[kind]
