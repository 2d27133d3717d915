"""Draw the figure set from a study's runs: PNG + PDF per figure, CSV tables, and an index in Markdown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from infoflow.figures.analyses import first_position_bias, with_prompt_order
from infoflow.figures.figure_set import StudyRuns
from infoflow.interventions.knockout import FeatureCategory
from infoflow.plots import heatmap_figure, info_flow_figure, runs_frame, save_figure
from infoflow.plots.causal_tracing import causal_tracing_figure
from infoflow.plots.style import feature_label
from infoflow.plots.sublayer_knockout import sublayer_knockout_figure
from infoflow.plots.vocab_projection import vocab_projection_figure
from infoflow.store import ResultsStore


@dataclass(frozen=True)
class Drawn:
    name: str  # file stem
    caption: str


def draw_figure_set(store: ResultsStore, study: StudyRuns, out_dir: Path) -> Path:
    """Write every figure and table of ``study`` into ``out_dir``; returns the index (``index.md``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = runs_frame(store, [m.info_flow for m in study.models], "info_flow")
    drawn: list[Drawn] = []

    def save(fig: Figure, name: str, caption: str) -> None:
        save_figure(fig, out_dir / name)
        drawn.append(Drawn(name, caption))

    ws = study.window_size
    main = frame[(frame["feature_category"] == FeatureCategory.ALL.value) & (frame["window_size"] == ws)]
    save(info_flow_figure(main), "info-flow", f"Knockout of edges to the last token, window size {ws}, all models.")
    families = {m.name: m.family for m in study.models}
    if len(set(families.values())) > 1:
        for family in dict.fromkeys(families.values()):
            names = [name for name, f in families.items() if f == family]
            rows = main[main["model"].isin(names)]
            save(info_flow_figure(rows), f"info-flow-{family}", f"As info-flow, the {family} models only.")
    for model in study.models:
        rows = frame[frame["model"] == model.name]
        if model.is_ssm:
            categories = rows[rows["window_size"] == ws]
            hybrid = " Categories rank the recurrent layers' features; attention layers are knocked out whole."
            save(
                info_flow_figure(categories, lines="feature_category"),
                f"feature-categories-{model.name}",
                f"{model.name}: {'; '.join(feature_label(c) for c in FeatureCategory)} (the other third exempt)."
                + (hybrid if model.is_hybrid else ""),
            )
        if model.mixer_runs:
            split = runs_frame(store, [model.info_flow, *model.mixer_runs.values()], "info_flow")
            split = split[(split["feature_category"] == FeatureCategory.ALL.value) & (split["window_size"] == ws)]
            save(
                info_flow_figure(split.assign(model=model.name), lines="mixers"),
                f"mixers-{model.name}",
                f"{model.name}: the edges knocked out through attention only (attention layers), through the "
                "recurrence only (recurrent layers), and in all layers of each window.",
            )
        sizes = rows[rows["feature_category"] == FeatureCategory.ALL.value]
        save(
            info_flow_figure(sizes, lines="window_size"),
            f"window-sizes-{model.name}",
            f"{model.name}: window sizes {', '.join(str(int(w)) for w in sorted(sizes['window_size'].unique()))}.",
        )
    ordered = with_prompt_order(main, study.prompts)
    for order in ordered["prompt_order"].dropna().unique():
        rows = ordered[ordered["prompt_order"] == order]
        rows = rows.assign(dataset_filter=rows["dataset_filter"] + f", {order} prompts only")  # stated in the title
        save(
            info_flow_figure(rows),
            f"prompt-order-{order.replace(' ', '-')}",
            f"Prompts whose {order.split()[0]} comes first ({rows['prompt_id'].nunique()} prompts).",
        )
    tables = _write_tables(main, out_dir)
    _draw_heatmaps(store, study, out_dir, save)
    _draw_recall(store, study, save)
    return _write_index(study, out_dir, drawn, tables)


def _draw_heatmaps(store: ResultsStore, study: StudyRuns, out_dir: Path, save) -> None:
    sizes = sorted({size for model in study.models for size in model.heatmaps})
    for size in sizes:
        run_ids = [model.heatmaps[size] for model in study.models if size in model.heatmaps]
        rows = runs_frame(store, run_ids, "heatmap")
        prompt_ids = study.heatmap_prompts if size == study.window_size else study.heatmap_prompts[:1]
        for prompt in prompt_ids:
            save(
                heatmap_figure(rows, prompt.prompt_id),
                f"heatmap-prompt{prompt.prompt_id}-ws{size}",
                f"p − p0 when the last token cannot read each position, window size {size}: {prompt.prompt!r} → "
                f"{prompt.target!r}.",
            )


def _draw_recall(store: ResultsStore, study: StudyRuns, save: Callable[[Figure, str, str], None]) -> None:
    """The recall methods' figures of the models that have their runs (``FigureSetOptions.recall``)."""
    models = [model for model in study.models if model.recall_runs]
    if not models:
        return
    knockouts = runs_frame(store, [m.recall_runs["sublayer_knockout"] for m in models], "sublayer_knockout")
    save(
        sublayer_knockout_figure(knockouts),
        "sublayer-knockout",
        f"Change of p(target) with the mixer's or the MLP's update at the last token zeroed in a window of "
        f"{study.window_size} layers (Geva et al. 2023, §5).",
    )
    for model in models:
        tracing = runs_frame(store, [model.recall_runs["causal_tracing"]], "causal_tracing")
        samples = store.run(model.recall_runs["causal_tracing"]).manifest.params["samples"]
        n_prompts = tracing["prompt_id"].nunique()
        save(
            causal_tracing_figure(tracing),
            f"causal-tracing-{model.name}",
            f"{model.name}: p(target) with the subject's embeddings noised and one site's clean value restored at "
            f"one layer and position (Meng et al. 2022), mean over the heatmap prompts ({n_prompts}) "
            f"with {samples} noise samples each, by part of the prompt.",
        )
        projection = runs_frame(store, [model.recall_runs["vocab_projection"]], "vocab_projection")
        save(
            vocab_projection_figure(projection),
            f"vocab-projection-{model.name}",
            f"{model.name}: each site read through the final norm and unembedding (Geva et al. 2023, §4 and §6): "
            "at the last subject token, the share of the top-10 tokens that are attribute tokens (the target's "
            "where the dataset lists no attributes); at the last token, the share of prompts whose top-1 token is "
            "the target.",
        )


def _write_tables(main: pd.DataFrame, out_dir: Path) -> list[tuple[str, pd.DataFrame]]:
    bias = first_position_bias(main)
    bias.to_csv(out_dir / "first-position-bias.csv", index=False)
    return [("First-position bias (lowest mean change of p over windows, %)", bias)]


def _write_index(
    study: StudyRuns, out_dir: Path, drawn: Sequence[Drawn], tables: Sequence[tuple[str, pd.DataFrame]]
) -> Path:
    lines = [
        "# Figure set",
        "",
        f"Models: {', '.join(m.name for m in study.models)}. {len(study.prompts)} prompts; "
        f"info-flow runs: {', '.join(m.info_flow for m in study.models)}.",
        "",
    ]
    for title, table in tables:
        lines += [f"## {title}", "", table.to_markdown(index=False, floatfmt=".1f"), ""]
    for item in drawn:
        lines += [f"## {item.name}", "", item.caption, "", f"![{item.name}]({item.name}.png)", ""]
    index = out_dir / "index.md"
    index.write_text("\n".join(lines))
    return index
