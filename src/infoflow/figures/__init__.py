"""The papers' figure set in one call (``infoflow figures``): runs what is missing, then draws."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from infoflow.figures.analyses import first_position_bias, prompt_order, with_prompt_order
from infoflow.figures.draw import draw_figure_set
from infoflow.figures.figure_set import BUILTIN_MODELS, FigureSetOptions, StudyRuns, run_study, window_sizes_for
from infoflow.store import ResultsStore, default_store_path


def make_figures(
    models: Sequence[str] = BUILTIN_MODELS,
    out_dir: str | Path = "figures",
    store: str | Path | None = None,
    options: FigureSetOptions | None = None,
    progress: Callable[[str], None] = print,
) -> Path:
    """Run what ``store`` lacks for ``models`` and draw the figure set into ``out_dir``; returns its index.

    A store this call creates is removed again if the call fails before any run started in it (a model that
    does not load, a dataset that does not read): a failed command leaves no empty store behind."""
    path = Path(store) if store is not None else default_store_path()
    created = not path.exists()
    try:
        with ResultsStore.open(path) as results:
            study = run_study(models, results, options or FigureSetOptions(), progress)
            return draw_figure_set(results, study, Path(out_dir))
    except BaseException:
        if created and path.exists():
            with ResultsStore.open(path, read_only=True) as results:
                unused = results.runs().empty
            if unused:
                path.unlink()
        raise


__all__ = [
    "BUILTIN_MODELS",
    "FigureSetOptions",
    "StudyRuns",
    "draw_figure_set",
    "first_position_bias",
    "make_figures",
    "prompt_order",
    "run_study",
    "window_sizes_for",
    "with_prompt_order",
]
