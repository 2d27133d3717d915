"""The attention export: each layer's hidden-attention matrix [target][source] per prompt, as the mean over the
layer's features (channels / heads) and, with ``per_feature``, every feature's own matrix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from infoflow.experiments.experiment import Block, Experiment, FigureOptions, Heading, TableBlock, Text
from infoflow.experiments.runner import ChunkJob, ModelContext, Rows, RunContext, SizedJob, run_each, with_ids
from infoflow.store.schema import key, value

if TYPE_CHECKING:
    import pandas as pd

    from infoflow.data.prompts import FactPrompt
    from infoflow.data.spans import TokenSpans
    from infoflow.models.base import CausalLM


@dataclass(frozen=True)
class AttentionParams:
    layers: tuple[int, ...] | None = None  # None: every layer
    per_feature: bool = False


def check_layers(model: CausalLM, layers: Sequence[int] | None) -> list[int]:
    """``layers`` (default: every layer) if each exists in ``model``; else a ``ValueError``."""
    chosen = list(range(model.n_layers)) if layers is None else list(layers)
    bad = [layer for layer in chosen if not 0 <= layer < model.n_layers]
    if bad:
        raise ValueError(f"layers {bad} do not exist in a model with {model.n_layers} layers (0..{model.n_layers - 1})")
    return chosen


def prepare(params: AttentionParams, model: CausalLM) -> AttentionParams:
    return AttentionParams(tuple(check_layers(model, params.layers)), params.per_feature)


def manifest_params(params: AttentionParams) -> dict[str, Any]:
    return {"layers": list(params.layers or ()), "per_feature": params.per_feature}


def attention_job(params: AttentionParams, context: ModelContext) -> ChunkJob:
    """The chunk job of ``attention``: prompt by prompt."""
    import torch

    from infoflow.engines.memory import MemoryModel, memory_model
    from infoflow.experiments.jobs import non_finite_error, prompt_ids

    model = context.loaded.model
    tokenizer = context.loaded.tokenizer

    def job(prompt: FactPrompt, spans: TokenSpans) -> Rows:
        tokens = [tokenizer.decode([i]) for i in spans.input_ids]
        with torch.no_grad():
            stream = model.residual_stream(prompt_ids(spans).view(1, -1).to(context.engine.device))
        if not all(torch.isfinite(hidden).all() for hidden in stream):
            raise non_finite_error(context, prompt, spans)
        rows = []
        for layer in params.layers or ():
            prepared = model.block(layer).mixer_inputs(stream[layer])
            matrices = model.mixer(layer).terms(prepared).matrix[0].float().cpu()  # [F, T, T]
            rows.append({"layer": layer, "feature": "mean", "matrix": matrices.mean(0).tolist(), "tokens": tokens})
            if params.per_feature:
                rows += [
                    {"layer": layer, "feature": str(f), "matrix": m.tolist(), "tokens": tokens}
                    for f, m in enumerate(matrices)
                ]
        return with_ids(prompt, rows)

    def needs(chunk: list[tuple[FactPrompt, TokenSpans]]) -> int:  # prompt by prompt: the longest
        longest = max(spans.num_tokens for _, spans in chunk)
        layers = len(params.layers or ())
        return MemoryModel.total(memory_model(model).attention_bytes(longest, layers, params.per_feature))

    return SizedJob(partial(run_each, job=job), needs, context.engine.device)


def report(frame: pd.DataFrame, options: FigureOptions) -> list[Block]:
    """A run's section: per prompt, the layers and matrices exported (the matrices: an export, or the web app)."""
    from infoflow.plots.summary import attention_summary

    run_id = str(frame["run_id"].iloc[0])
    return [
        Heading("Hidden-attention matrices"),
        Text(
            f"Per prompt, the layers and matrices exported; the matrices themselves: `infoflow runs export {run_id} "
            "attention.parquet`, or the web app's Hidden attention page."
        ),
        TableBlock(attention_summary(frame)),
    ]


EXPERIMENT = Experiment(
    kind="attention",
    title="attention export",
    columns=(
        key("layer", "INTEGER"),
        # a channel/head index as text, or the name of an aggregate over features ("mean", "norm", ...)
        key("feature", "VARCHAR"),
        value("matrix", "FLOAT[][]", required=True),  # [target position][source position]
        value("tokens", "VARCHAR[]"),
    ),
    job=attention_job,
    manifest_params=manifest_params,
    prepare=prepare,
    report=report,
)


def attention(
    context: RunContext, prompts: Sequence[FactPrompt], layers: Sequence[int] | None = None, per_feature: bool = False
) -> str:
    """Hidden-attention matrices [target][source] per layer: the mean over features (channels / heads), and
    every feature's own matrix with ``per_feature``."""
    return EXPERIMENT.run(context, prompts, AttentionParams(None if layers is None else tuple(layers), per_feature))
