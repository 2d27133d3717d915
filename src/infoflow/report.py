"""``infoflow report``: one self-contained HTML file (figures as embedded PNG, summary tables, inline CSS;
nothing loaded from the network) for a set of runs of a results store."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from infoflow.experiments.experiment import FLOAT_FORMAT, Block, FigureOptions, Heading, TableBlock, Text
from infoflow.experiments.registry import EXPERIMENTS
from infoflow.naming import short_filter
from infoflow.plots.info_flow import XAxis
from infoflow.plots.load import runs_frame
from infoflow.plots.style import png_bytes
from infoflow.plots.summary import error_summary
from infoflow.store import ResultsStore, Run
from infoflow.store.manifest import package_version
from infoflow.store.summary import SHORT_ID, details_rows, run_details

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1a1a1a;
       max-width: 1280px; margin: 2em auto; padding: 0 1.5em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.3em; margin-top: 2.2em;
border-bottom: 1px solid #ccc; padding-bottom: 0.2em; } h3 { font-size: 1.05em; margin-top: 1.6em; }
.meta { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0 1em; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.6em; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; word-break: break-word; max-width: 40em; }
.wide { max-width: 100%; overflow-x: auto; }
th { background: #f3f3f3; } td.num, table.data td { font-variant-numeric: tabular-nums; }
pre { margin: 0; white-space: pre-wrap; font-size: 0.95em; }
figure { margin: 1em 0 1.6em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85em; }
nav ul { padding-left: 1.2em; } .note { color: #777; font-style: italic; }
"""


def write_report(
    store: ResultsStore,
    run_ids: Sequence[str] | None = None,
    path: str | Path = "infoflow-report.html",
    *,
    heatmap_prompts: int = 4,
    x: XAxis = "depth",
) -> Path:
    """Write the report of ``run_ids`` (default: every run in the store) to ``path``; returns the path.

    Contents: an overview table of the runs; then, per experiment with two or more runs, their comparison
    (info-flow curves of the models that share a target, feature category and window size; side-by-side
    heatmaps of the prompts they share); then per run its manifest, prompt and error counts with the errors'
    reasons, and its figures and summary tables (info flow: per source, the window of the lowest mean change
    of p). Each experiment draws its own sections (its ``report`` and ``compare`` hooks).
    """
    options = FigureOptions(x=x, prompts=heatmap_prompts)
    counts = store.runs().set_index("run_id")  # progress and error counts of every run
    runs = [store.run(r) for r in (run_ids if run_ids is not None else counts.index)]
    body = [_overview(runs, counts)]
    for kind, experiment in EXPERIMENTS.items():
        of_kind = [r.run_id for r in runs if r.manifest.kind == kind]
        if experiment.compare is not None and len(of_kind) > 1:
            body.append(_render(experiment.compare(runs_frame(store, of_kind, kind), options)))
    body += [_run_section(store, run, counts, options) for run in runs]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page("infoflow report", "\n".join(filter(None, body))), encoding="utf-8")
    return path


def _page(title: str, body: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
        f'<p class="meta">generated {stamp} by infoflow {html.escape(package_version())}</p>\n'
        f"{body}\n</body>\n</html>\n"
    )


def _anchor(run_id: str) -> str:
    return f"run-{run_id}"


def _table(frame: pd.DataFrame) -> str:
    """A data table that fits the page: long cells wrap, and a table wider than the page scrolls by itself."""
    table = frame.to_html(index=False, border=0, classes="data", float_format=FLOAT_FORMAT, na_rep="–", escape=True)
    return f'<div class="wide">{table}</div>'


def _figure(fig: Figure, caption: str) -> str:
    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    alt = html.escape(caption, quote=True)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


def _overview(runs: list[Run], counts: pd.DataFrame) -> str:
    rows = pd.DataFrame(
        [
            {
                "run": r.run_id[:SHORT_ID],
                "name": r.name,
                "dataset": r.manifest.dataset,
                "prompt filter": short_filter(r.manifest.dataset_filter),
                "status": r.status.value,
                "prompts done": counts.loc[r.run_id, "n_done"],
                "errors": counts.loc[r.run_id, "n_errors"],
            }
            for r in runs
        ]
    )
    links = "".join(
        f'<li><a href="#{_anchor(r.run_id)}">{html.escape(r.name)}</a> ({html.escape(r.run_id[:SHORT_ID])})</li>'
        for r in runs
    )
    return f"<h2>Runs</h2>\n{_table(rows)}\n<nav><ul>{links}</ul></nav>"


def _render(blocks: list[Block]) -> str:
    """The HTML of an experiment's blocks (none: an empty string)."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            parts.append(f'<p class="{block.style}">{html.escape(block.text)}</p>')
        elif isinstance(block, TableBlock):
            parts.append(_table(block.frame))
        else:
            parts.append(_figure(block.figure, block.caption))
    return "\n".join(parts)


def _manifest_table(store: ResultsStore, run: Run) -> str:
    """The run's fields and parameters, as ``infoflow runs show`` prints them."""
    rows = details_rows(run_details(store, run.run_id, max_errors=0))
    return (
        "<table>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _run_section(store: ResultsStore, run: Run, counts: pd.DataFrame, options: FigureOptions) -> str:
    m = run.manifest
    title = html.escape(f"{run.name} ({run.run_id[:SHORT_ID]})")
    parts = [f'<h2 id="{_anchor(run.run_id)}">{title}</h2>', _manifest_table(store, run)]
    errors = error_summary(store.frame(run.run_id, "errors"))
    if not errors.empty:
        errors = errors.rename(columns={"reason": "example", "prompt_ids": "first prompt ids"})
        parts += ["<h3>Prompt errors (skipped)</h3>", _table(errors)]
    experiment = EXPERIMENTS.get(m.kind)
    if counts.loc[run.run_id, "n_rows"] == 0:
        parts.append('<p class="note">No rows yet.</p>')
    elif experiment is not None and experiment.report is not None:
        parts.append(_render(experiment.report(runs_frame(store, [run.run_id], m.kind), options)))
    return "\n".join(filter(None, parts))
