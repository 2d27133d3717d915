"""Look of every figure: rc settings, colours, readable labels, saving as PNG and PDF."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from io import BytesIO
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib as mpl
import numpy as np
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
FORMATS = ("png", "pdf", "svg")
# Column widths of a two-column paper (inches), with the font sizes that stay legible at that width.
COLUMN_WIDTHS = {"single": 3.5, "double": 7.0}
COLUMN_RC = {
    "single": {"font.size": 7, "axes.titlesize": 7.5, "axes.labelsize": 7, "xtick.labelsize": 6.5,
               "ytick.labelsize": 6.5, "legend.fontsize": 6.5, "figure.titlesize": 8, "lines.linewidth": 1.2},
    "double": {"font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "xtick.labelsize": 7.5,
               "ytick.labelsize": 7.5, "legend.fontsize": 7.5, "figure.titlesize": 9, "lines.linewidth": 1.4},
}  # fmt: skip
_EXTRA_RC: ContextVar[dict[str, object] | None] = ContextVar("extra_rc", default=None)

# Source panels in the paper's order, then any other token type.
SOURCE_ORDER = ("subject", "relation", "last", "first")

# Colour-blind-safe colours (Okabe & Ito 2008), the same in every figure, page and report: a model's colour is
# its family's hue, keyed by its name (never by its place in a figure); other models of a family get shades of
# that hue, and a model of no known family one of the spare colours, each chosen by a stable hash of its name.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
}
# (name pattern, family, hue); the first pattern found in a model's name (lower case) names its family.
FAMILY_HUES = (
    (re.compile(r"mamba-?2|mamba2"), "mamba2", OKABE_ITO["bluish green"]),
    (re.compile(r"falcon[-_]?mamba"), "falcon_mamba", OKABE_ITO["sky blue"]),
    (re.compile(r"mamba"), "mamba1", OKABE_ITO["blue"]),
    (re.compile(r"gpt-?2|gpt_neox|pythia|gpt-?j"), "gpt2", OKABE_ITO["vermillion"]),
    (re.compile(r"llama|smollm|qwen|mistral|olmo|gemma|phi"), "llama", OKABE_ITO["reddish purple"]),
)
SPARE_COLORS = (OKABE_ITO["orange"], OKABE_ITO["black"], "#999999", "#882255", "#44AA99", "#332288")
# Feature categories: one name and one colour everywhere (figures, app, command line), named by what is knocked
# out (DESIGN §1): fast_decay exempts the fast-decay third, so it knocks out the slow-decay, context-dependent rest.
FEATURE_COLORS = {
    FeatureCategory.ALL: OKABE_ITO["black"],
    FeatureCategory.FAST_DECAY: OKABE_ITO["orange"],
    FeatureCategory.SLOW_DECAY: OKABE_ITO["sky blue"],
}
MIXER_COLORS: dict[Hashable, str] = {
    MixerGroup.ALL.value: OKABE_ITO["black"],
    MixerGroup.ATTENTION.value: OKABE_ITO["reddish purple"],
    MixerGroup.RECURRENT.value: OKABE_ITO["bluish green"],
}
FEATURE_LABELS = {c: f"{c.knocked_out_description} knocked out" for c in FeatureCategory}
# Signed values (p − p0, mixing weights) on a diverging map centred at 0 (red: the knockout lowers p), and
# probabilities on a sequential one; both stay readable under the common colour-vision deficiencies.
DIVERGING_CMAP = "RdBu"
SEQUENTIAL_CMAP = "cividis"


def model_family(name: str) -> str | None:
    """The family a model's name (alias, hub id, path or run label) belongs to, by pattern; None if unknown."""
    lower = str(name).lower()
    return next((family for pattern, family, _ in FAMILY_HUES if pattern.search(lower)), None)


def _stable_index(text: str, n: int) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % n


def _shade(hex_color: str, amount: float) -> str:
    """``hex_color`` darkened (amount < 0) or lightened (amount > 0) towards black or white."""
    rgb = np.array(mpl.colors.to_rgb(hex_color))
    target = np.ones(3) if amount > 0 else np.zeros(3)
    return mpl.colors.to_hex(rgb + abs(amount) * (target - rgb))


# Models that carry their family's own hue (besides the built-in ones): the papers' models.
CANONICAL_MODELS = ("mamba-130m-hf", "mamba2-130m", "gpt2", "llama-2-7b-hf", "falcon-mamba-7b")


SHADES = (0.0, -0.35, 0.35, -0.55, 0.5)  # the family's own hue first


def model_color(name: str) -> str:
    """The fixed colour of a model: its family's hue (the built-in or first-named model of the family), a shade
    of it for other models of the family, a spare colour for unknown families; the same name, the same colour."""
    lower = str(name).lower()
    for pattern, _, hue in FAMILY_HUES:
        if pattern.search(lower):
            base = lower.split(" · ")[0]  # a run label starts with its model's name
            canonical = base.startswith("builtin-") or base.rsplit("/", 1)[-1] in CANONICAL_MODELS
            return hue if canonical else _shade(hue, SHADES[1 + _stable_index(base, len(SHADES) - 1)])
    return SPARE_COLORS[_stable_index(lower, len(SPARE_COLORS))]


def diverging_colorscale(n: int = 11) -> list[list[float | str]]:
    """``DIVERGING_CMAP`` as a plotly colour scale (the app draws what the figures draw)."""
    cmap = mpl.colormaps[DIVERGING_CMAP]
    return [[i / (n - 1), mpl.colors.to_hex(cmap(i / (n - 1)))] for i in range(n)]


def sequential_colorscale(n: int = 11) -> list[list[float | str]]:
    """``SEQUENTIAL_CMAP`` as a plotly colour scale."""
    cmap = mpl.colormaps[SEQUENTIAL_CMAP]
    return [[i / (n - 1), mpl.colors.to_hex(cmap(i / (n - 1)))] for i in range(n)]


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


def feature_label(value: Hashable) -> str:
    """The one name of a feature category (its command-line value otherwise unknown: as is)."""
    return FEATURE_LABELS[FeatureCategory(value)] if value in set(FeatureCategory) else str(value)


def line_label(column: str, value: Hashable) -> str:
    if column == "feature_category":
        return feature_label(value)
    if column == "window_size":
        return f"window {value}"
    if column == "mixers":
        return Mixers(str(value)).label
    return str(value)


def line_colors(column: str, values: Sequence[Hashable]) -> dict[Hashable, str]:
    """Feature categories and mixer groups by their fixed colours, window sizes on a blue ramp (light = small),
    models (and any other line) by ``model_color``."""
    if column == "feature_category":
        return {v: FEATURE_COLORS.get(v, SPARE_COLORS[i % len(SPARE_COLORS)]) for i, v in enumerate(values)}
    if column == "mixers":
        return {v: MIXER_COLORS.get(v, SPARE_COLORS[i % len(SPARE_COLORS)]) for i, v in enumerate(values)}
    if column == "window_size":
        ramp = mpl.colormaps["Blues"]
        shades = [0.45 + 0.55 * i / max(len(values) - 1, 1) for i in range(len(values))]
        return {v: mpl.colors.to_hex(ramp(s)) for v, s in zip(values, shades, strict=True)}
    colors = {v: model_color(str(v)) for v in values}
    if len(set(colors.values())) < len(colors):  # two lines that would look alike: the later ones get spares
        seen: set[str] = set()
        spares = iter([c for c in (*OKABE_ITO.values(), *SPARE_COLORS) if c not in colors.values()])
        for v, color in colors.items():
            if color in seen:
                colors[v] = next(spares, color)
            seen.add(colors[v])
    return colors


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
        with mpl.rc_context({**RC, **(_EXTRA_RC.get() or {})}):
            return draw(*args, **kwargs)

    return wrapper


@contextmanager
def column_style(width: str | None) -> Iterator[None]:
    """Figures drawn in this block use the font sizes of a ``single`` or ``double`` column (None: unchanged)."""
    if width is not None and width not in COLUMN_WIDTHS:
        raise ValueError(f"width must be one of {', '.join(COLUMN_WIDTHS)}, not {width!r}")
    token = _EXTRA_RC.set(COLUMN_RC[width] if width else None)
    try:
        yield
    finally:
        _EXTRA_RC.reset(token)


def fit_width(fig: Figure, width: str) -> Figure:
    """Resize ``fig`` to a column's width, its height scaled alike (constrained layout reflows the panels)."""
    inches = COLUMN_WIDTHS[width]
    old_width, old_height = fig.get_size_inches()
    fig.set_size_inches(inches, old_height * inches / old_width)
    return fig


@styled
def save_figure(
    fig: Figure, path: str | Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = PNG_DPI
) -> list[Path]:
    """Write the figure in each of ``formats`` (png, pdf, svg; PNG at ``dpi``) next to each other: ``path`` with
    each suffix (a given suffix of one of the formats is replaced). Returns the paths. Text stays text in PDF
    and SVG (TrueType embedded, no paths)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"figure formats are {', '.join(FORMATS)}, not {unknown or 'none'}")
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower().lstrip(".") in FORMATS else path
    written = [stem.with_name(f"{stem.name}.{fmt}") for fmt in formats]
    stem.parent.mkdir(parents=True, exist_ok=True)
    for target in written:
        fig.savefig(target, dpi=dpi)
    return written


@styled
def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
