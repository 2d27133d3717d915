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

from infoflow.naming import short_filter
from infoflow.plots.heatmap import heatmap_figure
from infoflow.plots.info_flow import XAxis, info_flow_figure
from infoflow.plots.load import runs_frame
from infoflow.plots.style import png_bytes
from infoflow.plots.summary import error_summary, evaluate_summary, flow_minima
from infoflow.store import ExperimentKind, ResultsStore, Run
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
         overflow-wrap: anywhere; }
th { background: #f3f3f3; } td.num, table.data td { font-variant-numeric: tabular-nums; }
pre { margin: 0; white-space: pre-wrap; font-size: 0.95em; }
figure { margin: 1em 0 1.6em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85em; }
nav ul { padding-left: 1.2em; } .note { color: #777; font-style: italic; }
"""
FLOAT_FORMAT = "{:.3g}".format


def write_report(
    store: ResultsStore,
    run_ids: Sequence[str] | None = None,
    path: str | Path = "infoflow-report.html",
    *,
    heatmap_prompts: int = 4,
    x: XAxis = "depth",
) -> Path:
    """Write the report of ``run_ids`` (default: every run in the store) to ``path``; returns the path.

    Contents: an overview table of the runs; info-flow curves comparing models (where several info-flow
    runs share a target, feature category and window size) and side-by-side heatmaps (prompts that several
    heatmap runs share); then per run its manifest, prompt and error counts with the errors' reasons, and
    its figures and summary tables (info flow: per source, the window of the lowest mean change of p).
    """
    counts = store.runs().set_index("run_id")  # progress and error counts of every run
    runs = [store.run(r) for r in (run_ids if run_ids is not None else counts.index)]
    flow = [r.run_id for r in runs if r.manifest.kind is ExperimentKind.INFO_FLOW]
    heat = [r.run_id for r in runs if r.manifest.kind is ExperimentKind.HEATMAP]
    body = [_overview(runs, counts)]
    if len(flow) > 1:
        body.append(_flow_comparison(runs_frame(store, flow, ExperimentKind.INFO_FLOW), x))
    if len(heat) > 1:
        body.append(_heatmap_comparison(runs_frame(store, heat, ExperimentKind.HEATMAP), heatmap_prompts, x))
    body += [_run_section(store, run, heatmap_prompts, x) for run in runs]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page("infoflow report", "\n".join(body)), encoding="utf-8")
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
    return frame.to_html(index=False, border=0, classes="data", float_format=FLOAT_FORMAT, na_rep="–", escape=True)


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


def _flow_comparison(frame: pd.DataFrame, x: XAxis) -> str:
    parts = ["<h2>Info flow: models compared</h2>"]
    keys = ["target", "feature_category", "window_size"]
    for key, rows in frame.groupby(keys, sort=True):
        if rows["model"].nunique() > 1:
            caption = "Mean change of p(target) (%) with 95 % Student-t band; " + ", ".join(
                f"{k} {v}" for k, v in zip(keys, key, strict=True)
            )
            parts.append(_figure(info_flow_figure(rows, lines="model", x=x), caption))
    if len(parts) == 1:
        parts.append('<p class="note">No target, feature category and window size is shared by two runs.</p>')
    return "\n".join(parts)


def _heatmap_comparison(frame: pd.DataFrame, n_prompts: int, x: XAxis) -> str:
    parts = ["<h2>Heatmaps: models compared</h2>"]
    for size, rows in frame.groupby("window_size", sort=True):
        shared = rows.groupby("prompt_id")["model"].nunique()
        for prompt_id in shared[shared > 1].index[:n_prompts]:
            fig = heatmap_figure(rows, int(prompt_id), window_size=int(size), x=x)
            parts.append(_figure(fig, f"p − p0 knocking out each token → last; prompt {prompt_id}, window size {size}"))
    if len(parts) == 1:
        parts.append('<p class="note">No prompt and window size is shared by two heatmap runs.</p>')
    return "\n".join(parts)


def _manifest_table(store: ResultsStore, run: Run) -> str:
    """The run's fields and parameters, as ``infoflow runs show`` prints them."""
    rows = details_rows(run_details(store, run.run_id, max_errors=0))
    return (
        "<table>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _run_section(store: ResultsStore, run: Run, n_prompts: int, x: XAxis) -> str:
    m = run.manifest
    title = html.escape(f"{run.name} ({run.run_id[:SHORT_ID]})")
    parts = [f'<h2 id="{_anchor(run.run_id)}">{title}</h2>', _manifest_table(store, run)]
    errors = error_summary(store.frame(run.run_id, "errors"))
    if not errors.empty:
        errors = errors.rename(columns={"reason": "example", "prompt_ids": "first prompt ids"})
        parts += ["<h3>Prompt errors (skipped)</h3>", _table(errors)]
    frame = runs_frame(store, [run.run_id], m.kind)
    if frame.empty:
        parts.append('<p class="note">No rows yet.</p>')
    elif m.kind is ExperimentKind.INFO_FLOW:
        parts.append(_flow_details(frame, x))
    elif m.kind is ExperimentKind.HEATMAP:
        parts.append(_heatmap_details(frame, n_prompts, x))
    elif m.kind is ExperimentKind.EVALUATE:
        parts += ["<h3>Clean predictions</h3>", _table(evaluate_summary(frame))]
    return "\n".join(parts)


def _flow_details(frame: pd.DataFrame, x: XAxis) -> str:
    minima = flow_minima(frame)
    minima = pd.DataFrame(
        {
            "target": minima["target"],
            "source": minima["source"],
            "feature category": minima["feature_category"],
            "window size": minima["window_size"],
            "prompts": minima["n"],
            "min mean change (%)": minima["min_mean_diff"].map(FLOAT_FORMAT),
            "95 % CI": [
                f"[{FLOAT_FORMAT(lo)}, {FLOAT_FORMAT(hi)}]"
                for lo, hi in zip(minima["low"], minima["high"], strict=True)
            ],
            "window start": minima["window_start"],
            "depth (%)": minima["depth"].round(1),
            "still top-1 (%)": minima["hit_rate"].round(1),
        }
    )
    parts = [
        "<h3>Strongest effect per source</h3>",
        '<p class="meta">The window with the lowest mean change of p(target), with its 95 % Student-t interval; '
        "depth: 100 % = last window start; still top-1: prompts whose target stays the top prediction there.</p>",
        _table(minima),
        "<h3>Curves</h3>",
    ]
    for (target, size), rows in frame.groupby(["target", "window_size"], sort=True):
        for metric, what in (("diff", "mean change of p(target) (%)"), ("hit", "% of prompts still top-1")):
            caption = f"{what} by feature category with 95 % Student-t band; target {target}, window size {size}"
            parts.append(_figure(info_flow_figure(rows, lines="feature_category", metric=metric, x=x), caption))
    if frame["window_size"].nunique() > 1:
        for (target, category), rows in frame.groupby(["target", "feature_category"], sort=True):
            caption = f"Mean change of p(target) (%) by window size; target {target}, feature category {category}"
            parts.append(_figure(info_flow_figure(rows, lines="window_size", x=x), caption))
    return "\n".join(parts)


def _heatmap_details(frame: pd.DataFrame, n_prompts: int, x: XAxis) -> str:
    prompts = sorted(frame["prompt_id"].unique())
    shown = prompts[:n_prompts]
    parts = [f'<h3>Heatmaps</h3>\n<p class="meta">{len(shown)} of {len(prompts)} prompts shown.</p>']
    for size, rows in frame.groupby("window_size", sort=True):
        for prompt_id in shown:
            if (rows["prompt_id"] == prompt_id).any():
                fig = heatmap_figure(rows, int(prompt_id), window_size=int(size), x=x)
                parts.append(_figure(fig, f"p − p0, prompt {prompt_id}, window size {size}"))
    return "\n".join(parts)
