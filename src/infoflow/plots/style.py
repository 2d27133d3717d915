"""Look of every figure: rc settings, colours, readable labels, saving as PNG and PDF."""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from io import BytesIO
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib as mpl
from matplotlib.figure import Figure

from infoflow.interventions.knockout import FeatureCategory
from infoflow.interventions.mixers import MixerGroup, Mixers

P = ParamSpec("P")
R = TypeVar("R")

RC = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d9d9d9",
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.8,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # embed TrueType, so text stays text in the PDF
    "ps.fonttype": 42,
    "svg.fonttype": "none",
}
PNG_DPI = 200

# Source panels in the paper's order, then any other token type.
SOURCE_ORDER = ("subject", "relation", "last", "first")
# Model lines as in the paper (reference plot plans), then matplotlib's qualitative cycle.
PAPER_COLORS = ("#0202da", "#0f710f", "#a41908", "#deaa46")
FEATURE_COLORS = {
    FeatureCategory.ALL: "#222222",
    FeatureCategory.FAST_DECAY: "#d95f02",
    FeatureCategory.SLOW_DECAY: "#1b9e77",
}
MIXER_COLORS: dict[Hashable, str] = {
    MixerGroup.ALL.value: "#222222",
    MixerGroup.ATTENTION.value: "#7570b3",
    MixerGroup.RECURRENT.value: "#e7298a",
}
FEATURE_LABELS = {
    FeatureCategory.ALL: "all features",
    FeatureCategory.FAST_DECAY: "context-dependent (slow-decay) knocked out",
    FeatureCategory.SLOW_DECAY: "context-independent (fast-decay) knocked out",
}


def ordered_sources(sources: Sequence[str]) -> list[str]:
    present = set(sources)
    return [s for s in SOURCE_ORDER if s in present] + sorted(present - set(SOURCE_ORDER))


def ordered_lines(column: str, values: Sequence[Hashable]) -> list[Hashable]:
    """Line order: feature categories and mixer groups as defined, window sizes ascending, anything else as first
    seen."""
    unique = list(dict.fromkeys(values))
    if column in ("feature_category", "mixers"):
        known = [c.value for c in (FeatureCategory if column == "feature_category" else MixerGroup)]
        return [c for c in known if c in unique] + [v for v in unique if v not in known]
    if column == "window_size":
        return sorted(unique)
    return unique


def line_label(column: str, value: Hashable) -> str:
    if column == "feature_category" and value in set(FeatureCategory):
        return FEATURE_LABELS[FeatureCategory(value)]
    if column == "window_size":
        return f"window {value}"
    if column == "mixers":
        return Mixers(str(value)).label
    return str(value)


def line_colors(column: str, values: Sequence[Hashable]) -> dict[Hashable, str]:
    """Feature categories and mixer groups by fixed colours, window sizes on a blue ramp (light = small), else the
    paper's."""
    if column == "feature_category":
        return {v: FEATURE_COLORS.get(v, f"C{i}") for i, v in enumerate(values)}
    if column == "mixers":
        return {v: MIXER_COLORS.get(v, f"C{i}") for i, v in enumerate(values)}
    if column == "window_size":
        ramp = mpl.colormaps["Blues"]
        shades = [0.45 + 0.55 * i / max(len(values) - 1, 1) for i in range(len(values))]
        return {v: mpl.colors.to_hex(ramp(s)) for v, s in zip(values, shades, strict=True)}
    cycle = [*PAPER_COLORS, *(f"C{i}" for i in (4, 5, 6, 7, 8, 9))]
    return {v: cycle[i % len(cycle)] for i, v in enumerate(values)}


def plain_text(text: str) -> str:
    """Text that matplotlib shows literally: ``$`` escaped (it would start mathtext), newlines and tabs as
    ``\\n`` and ``\\t`` (a token is one label line)."""
    return text.replace("$", r"\$").replace("\n", "\\n").replace("\t", "\\t")


def join_wrapped(parts: Sequence[str], width: int) -> list[str]:
    """Join title parts with ' · ', starting a new line between parts where a line would exceed ``width``."""
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 3 + len(part) > width:
            lines.append(part)
        else:
            lines[-1] += f" · {part}"
    return lines


def styled(draw: Callable[P, R]) -> Callable[P, R]:
    """Run a drawing function under our rc settings (artists read them when they are created)."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with mpl.rc_context(RC):
            return draw(*args, **kwargs)

    return wrapper


@styled
def save_figure(fig: Figure, path: str | Path) -> list[Path]:
    """Write the figure as PNG (dpi 200) and PDF next to each other: ``path`` with suffix ``.png`` and
    ``.pdf`` (a given ``.png``/``.pdf`` suffix is replaced). Returns both paths."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() in (".png", ".pdf") else path
    written = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")]
    stem.parent.mkdir(parents=True, exist_ok=True)
    for target in written:
        fig.savefig(target, dpi=PNG_DPI)
    return written


@styled
def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
