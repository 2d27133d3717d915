"""Vocabulary-projection curves (Geva et al. 2023, Figs. 2 and 6): the attribute rate at the subject's last
position across layers (share of the top-k tokens of each site's projection that are attribute tokens) and
the extraction rate at the last position (share of prompts whose update's top-1 token is the target)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from infoflow.plots.style import plain_text, styled

SITE_COLORS = {"residual": "#5e3c99", "mixer": "#a41908", "mlp": "#0f710f"}
SITE_LABELS = {"residual": "residual stream", "mixer": "mixer update", "mlp": "MLP update"}


def projection_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (position role, site, layer): the attribute rate (mean attribute share, %) and the extraction
    rate (% of prompts whose top-1 token is the target), over the prompts."""
    grouped = frame.groupby(["position_role", "site", "layer"])
    return pd.DataFrame(
        {
            "attribute_rate": grouped["attribute_share"].mean() * 100,
            "extraction_rate": grouped["target_top1"].mean() * 100,
            "n": grouped["prompt_id"].nunique(),
        }
    ).reset_index()


@styled
def vocab_projection_figure(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Two panels: the attribute rate at the subject's last position and the extraction rate at the last
    position, per layer, a line per site (rows of one run: ``store.frame``)."""
    if frame.empty:
        raise ValueError("no vocabulary-projection rows to plot")
    rates = projection_rates(frame)
    fig = Figure(figsize=(7.0, 3.0), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (
        ("subject_last", "attribute_rate", "Attribute rate (%)", "At the last subject token"),
        ("last", "extraction_rate", "Top-1 = target (%)", "At the last token"),
    )
    for ax, (role, column, label, panel_title) in zip(axes, panels, strict=True):
        lines = rates[rates["position_role"] == role]
        for name in sorted(set(lines["site"]), key=lambda site: list(SITE_COLORS).index(site)):
            line = lines[lines["site"] == name]
            ax.plot(line["layer"], line[column], marker="o", markersize=3, color=SITE_COLORS.get(name, "0.3"),
                    label=SITE_LABELS.get(name, name))  # fmt: skip
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Layer")
        ax.set_ylabel(label)
        ax.set_title(panel_title)
    axes[0].legend(loc="upper left")
    n_prompts = frame["prompt_id"].nunique()
    fig.suptitle(title if title is not None else plain_text(f"Vocabulary projection · {n_prompts} prompts"))
    return fig
