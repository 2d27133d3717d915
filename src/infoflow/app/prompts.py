"""Prompts page logic: a run's prompts as a table (p0, the strongest effect of a knockout and where), and for one
prompt the top-k predictions after a chosen knockout of the run, computed live with the reference engine.

The effect of a prompt is its strongest drop of p(target) over the run's knockouts, in percent of p0:
``min (p − p0) / p0 · 100`` (info flow: ``min diff``; heatmap: the lowest cell).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import TokenType, find_spans
from infoflow.engines.reference import ReferenceEngine
from infoflow.experiments.heatmap import heatmap_plan
from infoflow.experiments.info_flow import InfoFlowParams, info_flow_plan
from infoflow.experiments.plans import KnockoutOptions, PlannedKnockout
from infoflow.interventions.knockout import FeatureCategory, KnockoutMode
from infoflow.models.load import LoadedModel
from infoflow.plots.facts import Fact, run_facts
from infoflow.plots.style import feature_label
from infoflow.store import ResultsStore

KINDS = ("info_flow", "heatmap")
COLUMNS = ["prompt_id", "prompt", "subject", "target", "p0", "effect (%)", "where"]


def prompt_table(store: ResultsStore, run_id: str) -> pd.DataFrame:
    """One row per prompt of an info-flow or heatmap run: ``COLUMNS``, strongest effect first."""
    run = store.run(run_id)
    kind = str(run.manifest.kind)
    if kind not in KINDS:
        raise ValueError(f"the prompt table shows info-flow and heatmap runs; run {run.name} is a {kind} run")
    rows = store.frame(run.run_id)
    if rows.empty:
        return pd.DataFrame(columns=COLUMNS)
    if kind == "info_flow":
        strongest = rows.loc[rows.groupby("prompt_id")["diff"].idxmin()]
        where = [
            f"{s} → {t}, window {w}" + ("" if c == "all" else f", {feature_label(c)}")
            for s, t, w, c in zip(strongest["source"], strongest["target"], strongest["window_start"],
                                  strongest["feature_category"], strict=True)
        ]  # fmt: skip
        effect = strongest["diff"].to_numpy()
    else:
        strongest = rows.loc[rows.groupby("prompt_id")["p"].idxmin()]
        where = [f"last ← {pos} ({tok!r}), window {w}" for pos, tok, w in
                 zip(strongest["position"], strongest["token"], strongest["window_start"], strict=True)]  # fmt: skip
        effect = ((strongest["p"] - strongest["p0"]) / strongest["p0"] * 100).to_numpy()
    facts = run_facts(store, run.run_id)
    ids = strongest["prompt_id"].astype(int).tolist()
    table = pd.DataFrame(
        {
            "prompt_id": ids,
            "prompt": [facts[i].prompt if i in facts else "" for i in ids],
            "subject": [facts[i].subject if i in facts else "" for i in ids],
            "target": [facts[i].target if i in facts else "" for i in ids],
            "p0": strongest["p0"].to_numpy(),
            "effect (%)": effect,
            "where": where,
        }
    )
    return table.sort_values(["effect (%)", "prompt_id"]).reset_index(drop=True)


@dataclass(frozen=True)
class KnockoutChoice:
    """One knockout of a run for one prompt: its window, and the edges (an info-flow source and feature category,
    or a heatmap position)."""

    window_size: int
    window_start: int
    source: str | None = None  # info flow
    target: str = "last"
    feature_category: str = "all"
    position: int | None = None  # heatmap
    options: KnockoutOptions = field(default_factory=KnockoutOptions)


def run_options(params: dict) -> KnockoutOptions:
    """The knockout options a run recorded (its manifest's parameters)."""
    return KnockoutOptions(
        mode=KnockoutMode(params.get("mode", KnockoutMode.ZERO_ATTENTION.value)),
        strict=bool(params.get("strict", False)),
        exempt_fraction=float(params.get("exempt_fraction", 1 / 3)),
    )


def planned(loaded: LoadedModel, spans, choice: KnockoutChoice) -> PlannedKnockout:
    """The run's own planned knockout of this choice (the experiments' plans: the same edges as the stored row)."""
    n_layers = loaded.model.n_layers
    if choice.position is not None:
        plan = heatmap_plan(spans, n_layers, choice.window_size, choice.options)
        wanted = {"window_start": choice.window_start, "position": choice.position}
    else:
        params = InfoFlowParams(
            targets=(TokenType(choice.target),),
            sources=(TokenType(str(choice.source)),),
            feature_categories=(FeatureCategory(choice.feature_category),),
            window_sizes=(choice.window_size,),
            options=choice.options,
        )
        plan = info_flow_plan(spans, n_layers, params)
        wanted = {"window_start": choice.window_start}
    found = [k for k in plan if all(k.key[name] == value for name, value in wanted.items())]
    if not found:
        raise ValueError(f"no knockout {wanted} in a model of {n_layers} layers with window size {choice.window_size}")
    return found[0]


@dataclass(frozen=True)
class KnockoutTopK:
    table: pd.DataFrame  # rank, token, p (after the knockout), p clean, change, target
    p: float  # of the target token, after the knockout
    p0: float  # of the target token, clean


def knockout_top_k(loaded: LoadedModel, fact: Fact, choice: KnockoutChoice, k: int = 10) -> KnockoutTopK:
    """The k most probable next tokens after the knockout, with their clean probability: ``rank``, ``token``,
    ``p`` (after), ``p clean``, ``change`` (p − p clean), ``target`` (the fact's first target token)."""
    spans = find_spans(loaded.tokenizer, FactPrompt(0, fact.prompt, fact.subject, fact.target))
    knockout = planned(loaded, spans, choice).knockout
    probabilities = ReferenceEngine(loaded.model).probabilities(torch.tensor(spans.input_ids), [None, knockout])
    clean, after = probabilities[0].float().cpu(), probabilities[1].float().cpu()  # [V] each
    top = torch.topk(after, min(k, after.shape[0]))
    ids = top.indices.tolist()
    table = pd.DataFrame(
        {
            "rank": range(1, len(ids) + 1),
            "token": [repr(loaded.tokenizer.decode([i])) for i in ids],
            "p": top.values.tolist(),
            "p clean": clean[ids].tolist(),
            "change": (after[ids] - clean[ids]).tolist(),
            "target": [i == spans.target_id for i in ids],
        }
    )
    return KnockoutTopK(table, float(after[spans.target_id]), float(clean[spans.target_id]))
