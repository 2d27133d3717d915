"""Analyses around the info-flow curves: prompt order (subject first or relation first) and first-position bias."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from infoflow.data.prompts import FactPrompt
from infoflow.plots.summary import flow_minima

SUBJECT_FIRST = "subject first"
RELATION_FIRST = "relation first"


def prompt_order(prompt: FactPrompt) -> str:
    """``subject first`` when the prompt opens with its subject ("Vorlak Tesmire was born in"), else
    ``relation first`` ("The homeland of Vorlak Tesmire is")."""
    return SUBJECT_FIRST if prompt.prompt.lstrip().startswith(prompt.subject.strip()) else RELATION_FIRST


def with_prompt_order(frame: pd.DataFrame, prompts: Sequence[FactPrompt]) -> pd.DataFrame:
    """``frame`` with a column ``prompt_order`` from its ``prompt_id``."""
    orders = {prompt.prompt_id: prompt_order(prompt) for prompt in prompts}
    return frame.assign(prompt_order=frame["prompt_id"].map(orders))


def first_position_bias(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model: the strongest drop (lowest mean ``diff`` over windows, %) of first -> last, and of each
    other source, with ``first_share`` = first's drop / the strongest other source's drop.

    A model with a first-position bias loses as much (share near or above 1) when the last token cannot read
    the first position as when it cannot read the subject; without it the share is near 0.
    """
    minima = flow_minima(frame)
    if "model" not in minima.columns:
        minima = minima.assign(model="model")
    table = minima.pivot_table(index="model", columns="source", values="min_mean_diff", sort=False)
    if "first" not in table.columns:
        raise ValueError("first-position bias needs first -> last knockouts (source 'first')")
    others = table.drop(columns=["first"])
    strongest = others.min(axis=1)
    out = table.add_prefix("min_diff_").assign(
        strongest_other=others.idxmin(axis=1), first_share=table["first"] / strongest.where(strongest < 0)
    )
    return out.reset_index()
