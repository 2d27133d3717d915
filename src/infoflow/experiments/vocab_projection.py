"""Vocabulary projection (the logit lens; Geva et al. 2023, §4 and §6): the residual stream after each layer, and
each layer's mixer and MLP update, at the subject's last position and at the last position, read through the
final norm and the unembedding, ``logits = lm_head(final_norm(v))``.

Per (position, site, layer) a row holds the top-k tokens, the target's probability, rank and whether it is the
top-1 token (at the last position, for an update: the "extraction" of Geva et al. §6), and the attribute share:
the fraction of the top-k tokens that are tokens of the subject's attributes (the dataset's ``attributes``
column, a list or a ';'-separated string, where it has one; else the target), Geva et al.'s attribute rate.

Its parameters, plan and rows live here; the runner stores the rows in the ``vocab_projection`` table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from infoflow.data.prompts import as_continuation
from infoflow.experiments.experiment import Block, Experiment, FigureOptions
from infoflow.experiments.runner import ChunkJob, ModelContext, Rows, RunContext, run_each, with_ids
from infoflow.experiments.sections import figure_section
from infoflow.interventions.sites import check_sites, parse_site
from infoflow.models.modes import Site
from infoflow.store.schema import key, value

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from matplotlib.figure import Figure
    from transformers import PreTrainedTokenizerBase

    from infoflow.data.prompts import FactPrompt
    from infoflow.data.spans import TokenSpans
    from infoflow.models.base import CausalLM


@dataclass(frozen=True)
class VocabProjectionParams:
    """Which sites are projected, and how many top tokens each row keeps (and the attribute share counts)."""

    sites: tuple[Site, ...] = (Site.RESIDUAL, Site.MIXER, Site.MLP)
    top_k: int = 10

    def __post_init__(self) -> None:
        if not self.sites:
            raise ValueError("a vocabulary projection needs at least one site")
        object.__setattr__(self, "sites", tuple(parse_site(site) for site in self.sites))
        if self.top_k < 1:
            raise ValueError(f"top k must be at least 1, got {self.top_k}")


def prepare(params: VocabProjectionParams, model: CausalLM) -> VocabProjectionParams:
    check_sites(model, params.sites)
    return params


def manifest_params(params: VocabProjectionParams) -> dict[str, Any]:
    return {"sites": [s.value for s in params.sites], "top_k": params.top_k}


def projected_logits(
    model: CausalLM, input_ids: torch.Tensor, positions: Sequence[int], sites: Sequence[Site] = tuple(Site)
) -> dict[tuple[Site, int], torch.Tensor]:
    """(site, layer) -> fp32 logits [len(positions), V] of ``lm_head(final_norm(v))`` for the value v at that
    site of the clean run of ``input_ids`` [T]. Updates narrower than the residual stream (Zamba2's shared
    blocks write into a slot of a wider stream) are left out."""
    import torch

    from infoflow.interventions.patching import record_sites

    with torch.no_grad():
        recorded = record_sites(model, model.embed(input_ids.view(1, -1).to(model.lm_head.weight.device)))
    width = recorded.stream[0].shape[-1]
    with torch.no_grad():
        return {
            (site, layer): model.unembed(site_value[0, list(positions)]).float()
            for site in sites
            for layer, site_value in recorded.sites[site].items()
            if site_value.shape[-1] == width
        }


def attribute_ids(tokenizer: PreTrainedTokenizerBase, prompt: FactPrompt) -> frozenset[int]:
    """The tokens of the subject's attributes as they would continue the prompt (the target's without a list)."""
    attributes = prompt.extras.get("attributes") or [prompt.target]
    if isinstance(attributes, str):
        attributes = attributes.split(";")
    texts = [as_continuation(prompt.prompt, str(a).strip()) for a in attributes if str(a).strip()]
    return frozenset(i for text in texts for i in tokenizer(text, add_special_tokens=False)["input_ids"])


def projection_rows(
    logits: dict[tuple[Site, int], torch.Tensor],
    roles: Sequence[tuple[str, int]],
    spans: TokenSpans,
    attributes: frozenset[int],
    top_k: int,
    decode: Callable[[int], str],
) -> Rows:
    """A row per (role, site, layer): the top-k tokens, the target's probability, rank and top-1, and the share of
    the top-k tokens that are attribute tokens; ``roles`` names each projected position, in the logits' order."""
    import torch

    rows = []
    for (site, layer), site_logits in logits.items():
        probabilities = torch.softmax(site_logits, dim=-1)  # [positions, V]
        top = torch.topk(probabilities, min(top_k, probabilities.shape[-1]))
        for i, (name, position) in enumerate(roles):
            ids, values = top.indices[i].tolist(), top.values[i].tolist()
            p = probabilities[i, spans.target_id].item()
            rows.append(
                {
                    "position_role": name,
                    "site": site.value,
                    "layer": layer,
                    "position": position,
                    "token": decode(spans.input_ids[position]),
                    "top_tokens": json.dumps([[t, decode(t), round(v, 6)] for t, v in zip(ids, values, strict=True)]),
                    "target_p": p,
                    "target_rank": 1 + int((probabilities[i] > p).sum().item()),
                    "target_top1": ids[0] == spans.target_id,
                    "attribute_share": sum(t in attributes for t in ids) / len(ids),
                }
            )
    return rows


def vocab_projection_job(params: VocabProjectionParams, context: ModelContext) -> ChunkJob:
    """The chunk job: one clean run per prompt."""
    from infoflow.experiments.jobs import prompt_ids

    model, tokenizer = context.loaded.model, context.loaded.tokenizer

    def decode(token: int) -> str:
        return tokenizer.decode([token])

    def job(prompt: FactPrompt, spans: TokenSpans) -> Rows:
        roles = [("subject_last", spans.subject[-1]), ("last", spans.num_tokens - 1)]
        logits = projected_logits(model, prompt_ids(spans), [p for _, p in roles], params.sites)
        attributes = attribute_ids(tokenizer, prompt)
        return with_ids(prompt, projection_rows(logits, roles, spans, attributes, params.top_k, decode))

    return partial(run_each, job=job)


def figures(frame: pd.DataFrame, options: FigureOptions) -> Iterator[tuple[str, Figure]]:
    """Per run: the attribute and extraction rates per layer and site."""
    from infoflow.plots.vocab_projection import vocab_projection_figure

    for model, rows in frame.groupby("model", sort=True):
        yield str(model).replace("/", "-"), vocab_projection_figure(rows)


def report(frame: pd.DataFrame, options: FigureOptions) -> list[Block]:
    return figure_section(
        "Vocabulary projection", "Attribute rate and extraction rate per layer", figures(frame, options)
    )


EXPERIMENT = Experiment(
    kind="vocab_projection",
    title="vocabulary projection",
    columns=(
        key("position_role", "VARCHAR"),  # subject_last or last
        key("site", "VARCHAR"),
        key("layer", "INTEGER"),
        value("position", "INTEGER"),
        value("token", "VARCHAR"),
        value("top_tokens", "JSON"),
        value("target_p", "DOUBLE", required=True),
        value("target_rank", "INTEGER"),
        value("target_top1", "BOOLEAN"),
        value("attribute_share", "DOUBLE"),
    ),
    job=vocab_projection_job,
    manifest_params=manifest_params,
    prepare=prepare,
    report=report,
    compare=report,
    plot=figures,
)


def vocab_projection(
    context: RunContext, prompts: Sequence[FactPrompt], params: VocabProjectionParams | None = None
) -> str:
    """The logit-lens table of every prompt at its subject's last and its last position; the run id."""
    return EXPERIMENT.run(context, prompts, params or VocabProjectionParams())
