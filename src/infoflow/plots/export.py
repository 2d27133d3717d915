"""``infoflow plot``: publication figures of stored runs, named after the runs, in the formats, resolution and
column width asked for, each with a caption file that records what it shows (so titles need not)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from infoflow.experiments.experiment import FigureOptions
from infoflow.experiments.registry import EXPERIMENTS
from infoflow.naming import short_filter
from infoflow.plots.aggregate import interval_caption
from infoflow.plots.load import runs_frame
from infoflow.plots.style import PNG_DPI, column_style, fit_width, save_figure
from infoflow.store import ResultsStore

UNSAFE = re.compile(r"[^\w.,=+-]+")


def file_stem(name: str) -> str:
    """A run name as a file name: ``builtin-mamba1 · info_flow · ws9`` -> ``builtin-mamba1_info_flow_ws9``."""
    return UNSAFE.sub("_", name).strip("_.") or "run"


@dataclass(frozen=True)
class PlotOptions:
    figure: FigureOptions = field(default_factory=FigureOptions)  # metric, lines, x axis
    title: str | None = None  # None: the figure's own title; "": none
    formats: Sequence[str] = ("png", "pdf")
    dpi: int = PNG_DPI
    width: str | None = None  # single or double column; None: the figure's natural size


def plot_runs(store: ResultsStore, run_ids: Sequence[str], out_dir: Path, options: PlotOptions) -> list[Path]:
    """Draw the runs with their experiment's ``plot`` hook (info flow: one figure, the runs as lines; heatmap:
    one figure per prompt) into ``out_dir``; returns the files written (figures and their ``.txt`` captions)."""
    runs = [store.run(run_id) for run_id in run_ids]
    drawn = [kind for kind, experiment in EXPERIMENTS.items() if experiment.plot is not None]
    kinds = sorted({run.manifest.kind for run in runs})
    if len(kinds) != 1 or kinds[0] not in drawn:
        raise ValueError(f"plot takes runs of one kind, {', '.join(drawn[:-1])} or {drawn[-1]}; got {kinds}")
    plot = EXPERIMENTS[kinds[0]].plot
    assert plot is not None
    frame = runs_frame(store, [run.run_id for run in runs], kinds[0])
    stem = "+".join(file_stem(run.name) for run in runs)
    caption = [f"{run.name} (run {run.run_id}): {run.manifest.model_id} on {run.manifest.dataset}, prompts "
               f"{short_filter(run.manifest.dataset_filter, 80)}" for run in runs]  # fmt: skip
    if kinds[0] == "info_flow":
        caption.insert(0, f"Mean over prompts with its {interval_caption()}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with column_style(options.width):
        for part, figure in plot(frame, options.figure):
            written += _save(figure, out_dir / f"{stem}-{part}", options, caption)
    return written


def _save(figure: Figure, path: Path, options: PlotOptions, caption: list[str]) -> list[Path]:
    if options.title is not None:
        figure.suptitle(options.title)
    if options.width is not None:
        fit_width(figure, options.width)
    written = save_figure(figure, path, options.formats, options.dpi)
    text = path.with_name(path.name + ".txt")
    text.write_text("\n".join(caption) + "\n", encoding="utf-8")
    return [*written, text]
