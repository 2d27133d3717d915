"""The ``infoflow`` command line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from infoflow.data.spans import TokenType
from infoflow.experiments.filters import describe_selection
from infoflow.interventions.knockout import FeatureCategory, KnockoutMode, default_window_size

app = typer.Typer(
    help="Trace how factual information flows through Mamba and Transformer language models, by knockout.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="List, show, export and delete runs in the results store.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
console = Console(stderr=True)
out = Console()

DEFAULT_MODEL = "builtin-mamba1"

Model = Annotated[str, typer.Option("--model", "-m", help="Alias (see `infoflow models`), hub id, folder or .gguf.")]
Dataset = Annotated[
    str, typer.Option("--dataset", "-d", help="counterfact, known_1000, synthetic, or a CSV/JSONL/Parquet file.")
]
DatasetFile = Annotated[
    Path | None, typer.Option("--dataset-file", help="A local copy of a named dataset (no download).")
]
StoreOption = Annotated[
    Path | None,
    typer.Option("--store", help="Results store file \\[default: $INFOFLOW_STORE or ./infoflow-results.duckdb]"),
]
FilterOption = Annotated[str, typer.Option("--filter", help="Prompt filter, e.g. 'correct and not ids(3)'.")]
Limit = Annotated[int | None, typer.Option("--limit", "-n", min=1, help="At most this many prompts (a seeded sample).")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the prompt sample.")]
Device = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")]
Dtype = Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")]


def parse_batch_size(text: str) -> int | None:
    """``--batch-size``: a positive number of rows, or auto (None)."""
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise typer.BadParameter(f"expected a positive number of rows or 'auto', got {text!r}")
    return int(text)


BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        parser=parse_batch_size,
        metavar="N|auto",
        help="Knockout rows per batched tail pass (fast engine); auto: 256 on a CPU, as many as fit on a GPU "
        "\\[default: auto].",
    ),
]
EngineOption = Annotated[str, typer.Option("--engine", help="fast (default) or reference (one forward per knockout).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Run chunks of prompts on a Ray cluster: local (start one here), auto (`ray start` on this machine) "
        "or HOST:PORT. This process alone writes the store (docs/scale-out.md).",
    ),
]
RayWorkers = Annotated[
    int | None, typer.Option("--ray-workers", min=1, help="Ray workers \\[default: one per GPU (cuda) or CPU].")
]


class CliError(Exception):
    """An error shown to the user as one line, without a traceback."""


@dataclass
class Setup:
    model: str
    dataset: str
    dataset_file: Path | None
    store: Path | None
    device: str
    dtype: str
    batch_size: int | None
    engine: str
    quiet: bool
    ray: str | None = None
    ray_workers: int | None = None


@contextmanager
def experiment_context(setup: Setup, dataset_filter: str = "all") -> Iterator:
    """Load model, dataset and store; yield (RunContext, prompts). Expected errors become CliError."""
    from infoflow.data import load_dataset
    from infoflow.experiments.distributed import RayExecutor, WorkerSpec, make_engine
    from infoflow.experiments.runner import RunContext
    from infoflow.models import load_model
    from infoflow.store import ResultsStore

    if setup.engine not in ("fast", "reference"):
        raise CliError(f"unknown engine {setup.engine!r}; choose fast or reference")
    # with Ray the workers compute; this process only tokenizes and writes the store, so its copy stays on the CPU
    with console.status(f"loading {setup.model}", spinner="dots"):
        loaded = load_model(setup.model, device="cpu" if setup.ray else setup.device, dtype=setup.dtype)
    prompts = load_dataset(setup.dataset, path=setup.dataset_file)
    executor = None
    if setup.ray:
        spec = WorkerSpec(setup.model, setup.device, setup.dtype, setup.engine, setup.batch_size)
        with console.status(f"connecting to Ray ({setup.ray})", spinner="dots"):
            executor = RayExecutor(spec, setup.ray, setup.ray_workers)
    try:
        with ResultsStore.open(setup.store) as store:
            context = RunContext(
                loaded=loaded,
                engine=make_engine(setup.engine, loaded.model, setup.batch_size),
                store=store,
                dataset=setup.dataset,
                dataset_filter=dataset_filter,
                show_progress=not setup.quiet,
                executor=executor,
            )
            yield context, prompts
    finally:
        if executor is not None:
            executor.close()


def run_command(function, *args, **kwargs):
    """Run a command body; expected failures print one clear line and exit 1, Ctrl-C exits 130."""
    from infoflow.data.errors import DatasetError
    from infoflow.experiments.filters import FilterError
    from infoflow.models import ModelLoadError
    from infoflow.store import StoreError

    try:
        return function(*args, **kwargs)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished prompts are stored; run the same command again to resume")
        raise typer.Exit(130) from None
    except (
        CliError,
        ModelLoadError,
        DatasetError,
        FilterError,
        StoreError,
        FileNotFoundError,
        ValueError,
        ConnectionError,
    ) as error:  # ConnectionError: no Ray cluster at --ray's address
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None


def selected(context, prompts, expression: str, limit: int | None, seed: int) -> tuple:
    """(the run's context, recording a shortfall in its manifest; the prompts chosen)."""
    from dataclasses import replace

    from infoflow.experiments.selection import choose

    selection = choose(context, prompts, expression, limit, seed)
    if not selection.prompts:
        raise CliError(f"the filter {expression!r} selects no prompt of {context.dataset}")
    if selection.shortfall:
        console.print(f"[yellow]note:[/] {selection.shortfall}")
    return replace(context, dataset_filter=selection.recorded(context.dataset_filter)), selection.prompts


def print_done(kind: str, run_id: str, context) -> None:
    run = context.store.run(run_id)
    console.print(
        f"[green]{kind} run {run_id}[/] {run.status}: model {context.loaded.name}, dataset {context.dataset} "
        f"({run.manifest.n_prompts} prompts) in {context.store.path}"
    )


@app.command()
def demo(
    model: Model = DEFAULT_MODEL,
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for the results store and report.")] = Path(
        "infoflow-demo"
    ),
    prompts: Annotated[int, typer.Option("--prompts", "-n", help="Prompts in the info-flow sweep.")] = 100,
    quiet: Quiet = False,
) -> None:
    """The main job, offline: info-flow sweep and heatmaps of the built-in model, then the HTML report."""

    def body() -> None:
        from infoflow.demo import run_demo

        report_path = run_demo(output, model=model, n_prompts=prompts, show_progress=not quiet)
        out.print(f"report: {report_path.resolve()}")

    run_command(body)


@app.command()
def models() -> None:
    """List the supported models and their short aliases."""
    from infoflow.models import list_models

    table = Table("alias", "family", "layers", "source", "description")
    for entry in list_models():
        table.add_row(
            entry.alias, entry.family, str(entry.n_layers or ""), entry.hub_id or "package", entry.description
        )
    out.print(table)


@app.command(name="evaluate")
def evaluate_command(
    model: Model = DEFAULT_MODEL,
    dataset: Dataset = "synthetic",
    dataset_file: DatasetFile = None,
    dataset_filter: FilterOption = "all",
    limit: Limit = None,
    seed: Seed = 0,
    store: StoreOption = None,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    batch_size: BatchSize = None,
    engine: EngineOption = "fast",
    quiet: Quiet = False,
    ray: RayAddress = None,
    ray_workers: RayWorkers = None,
) -> None:
    """Clean next-token distribution per prompt: p0, rank and top-1 correctness of the target."""

    def body() -> None:
        from infoflow.experiments.experiments import evaluate

        setup = Setup(model, dataset, dataset_file, store, device, dtype, batch_size, engine, quiet, ray, ray_workers)
        with experiment_context(setup, describe_selection(dataset_filter, limit, seed)) as (context, prompts):
            context, chosen = selected(context, prompts, dataset_filter, limit, seed)
            run_id = evaluate(context, chosen)
            frame = context.store.frame(run_id, "evaluate")
            print_done("evaluate", run_id, context)
            out.print(f"top-1 accuracy {frame['correct'].mean():.1%} on {len(frame)} prompts")

    run_command(body)


@app.command(name="info-flow")
def info_flow_command(
    model: Model = DEFAULT_MODEL,
    dataset: Dataset = "synthetic",
    dataset_file: DatasetFile = None,
    targets: Annotated[list[TokenType], typer.Option("--target", help="Target token type(s).")] = [TokenType.LAST],  # noqa: B006
    sources: Annotated[list[TokenType] | None, typer.Option("--source", help="Source token type(s).")] = None,
    feature_categories: Annotated[
        list[FeatureCategory], typer.Option("--features", help="Mamba feature categories (exempt third).")
    ] = [FeatureCategory.ALL],  # noqa: B006
    window_sizes: Annotated[
        list[int] | None, typer.Option("--window-size", "-w", help="Window size(s) \\[default: 9, or half the depth].")
    ] = None,
    mode: Annotated[KnockoutMode, typer.Option(help="Mamba knockout mode.")] = KnockoutMode.ZERO_ATTENTION,
    strict: Annotated[bool, typer.Option(help="Mamba: also block the conv1d path from sources.")] = False,
    exempt_fraction: Annotated[float, typer.Option(help="Fraction of features a category exempts.")] = 1 / 3,
    dataset_filter: FilterOption = "correct",
    limit: Limit = None,
    seed: Seed = 0,
    store: StoreOption = None,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    batch_size: BatchSize = None,
    engine: EngineOption = "fast",
    quiet: Quiet = False,
    ray: RayAddress = None,
    ray_workers: RayWorkers = None,
) -> None:
    """Knock out target <- source edges in every window of layers and record the target's probability."""

    def body() -> None:
        from infoflow.experiments.experiments import info_flow
        from infoflow.experiments.plans import InfoFlowParams, KnockoutOptions

        setup = Setup(model, dataset, dataset_file, store, device, dtype, batch_size, engine, quiet, ray, ray_workers)
        with experiment_context(setup, describe_selection(dataset_filter, limit, seed)) as (context, prompts):
            n_layers = context.loaded.model.n_layers
            params = InfoFlowParams(
                targets=tuple(targets),
                sources=tuple(sources or InfoFlowParams().sources),
                feature_categories=tuple(feature_categories),
                window_sizes=tuple(window_sizes or [default_window_size(n_layers)]),
                options=KnockoutOptions(mode=mode, strict=strict, exempt_fraction=exempt_fraction),
            )
            params.check_model(context.loaded.model)  # before any work, selection included
            context, chosen = selected(context, prompts, dataset_filter, limit, seed)
            run_id = info_flow(context, chosen, params)
            print_done("info-flow", run_id, context)
            out.print(f"figures and tables: infoflow report {run_id}")

    run_command(body)


@app.command(name="heatmap")
def heatmap_command(
    model: Model = DEFAULT_MODEL,
    dataset: Dataset = "synthetic",
    dataset_file: DatasetFile = None,
    window_size: Annotated[
        int | None, typer.Option("--window-size", "-w", help="\\[default: 9, or half the depth]")
    ] = None,
    mode: Annotated[KnockoutMode, typer.Option(help="Mamba knockout mode.")] = KnockoutMode.ZERO_ATTENTION,
    strict: Annotated[bool, typer.Option(help="Mamba: also block the conv1d path from sources.")] = False,
    dataset_filter: FilterOption = "correct",
    limit: Limit = 5,
    seed: Seed = 0,
    store: StoreOption = None,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    batch_size: BatchSize = None,
    engine: EngineOption = "fast",
    quiet: Quiet = False,
    ray: RayAddress = None,
    ray_workers: RayWorkers = None,
) -> None:
    """Knock out last <- each position in every window: a tokens x windows map of the target's probability."""

    def body() -> None:
        from infoflow.experiments.experiments import heatmap
        from infoflow.experiments.plans import InfoFlowParams, KnockoutOptions

        setup = Setup(model, dataset, dataset_file, store, device, dtype, batch_size, engine, quiet, ray, ray_workers)
        with experiment_context(setup, describe_selection(dataset_filter, limit, seed)) as (context, prompts):
            lm = context.loaded.model
            size = window_size if window_size is not None else default_window_size(lm.n_layers)
            options = KnockoutOptions(mode=mode, strict=strict)
            InfoFlowParams(window_sizes=(size,), options=options).check_model(lm)  # before work
            context, chosen = selected(context, prompts, dataset_filter, limit, seed)
            run_id = heatmap(context, chosen, size, options)
            print_done("heatmap", run_id, context)
            out.print(f"figures: infoflow report {run_id}")

    run_command(body)


@app.command(name="attention")
def attention_command(
    model: Model = DEFAULT_MODEL,
    dataset: Dataset = "synthetic",
    dataset_file: DatasetFile = None,
    dataset_filter: FilterOption = "all",
    limit: Limit = 1,
    seed: Seed = 0,
    layers: Annotated[list[int] | None, typer.Option("--layer", help="Layer(s) to export \\[default: all].")] = None,
    per_feature: Annotated[bool, typer.Option(help="Also every channel's / head's own matrix.")] = False,
    store: StoreOption = None,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    quiet: Quiet = False,
) -> None:
    """Export hidden-attention matrices (mean over channels/heads, optionally each) for prompts."""

    def body() -> None:
        from infoflow.experiments.experiments import attention, check_layers

        setup = Setup(model, dataset, dataset_file, store, device, dtype, 1, "reference", quiet)
        with experiment_context(setup, describe_selection(dataset_filter, limit, seed)) as (context, prompts):
            check_layers(context.loaded.model, layers)  # before any work, selection included
            context, chosen = selected(context, prompts, dataset_filter, limit, seed)
            run_id = attention(context, chosen, layers, per_feature)
            print_done("attention", run_id, context)
            out.print(f"export: infoflow runs export {run_id} attention.parquet")

    run_command(body)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]


def print_json(value: object) -> None:
    import json

    out.print_json(json.dumps(value, ensure_ascii=False))


@runs_app.command("list")
def runs_list(store: StoreOption = None, as_json: JsonFlag = False) -> None:
    """Every run: id, name, filter, status, prompts done and last update."""

    def body() -> None:
        from infoflow.store import ResultsStore
        from infoflow.store.summary import runs_overview, runs_records

        with ResultsStore.open(store, read_only=True) as results:
            if as_json:
                print_json(runs_records(results))
                return
            frame = runs_overview(results)
        if frame.empty:
            out.print("no runs yet")
            return
        # ids stay whole (users copy them); under each name, its dataset and shortened filter
        table = Table(
            Column("id", no_wrap=True), Column("name", ratio=1, overflow="fold"), Column("status", no_wrap=True),
            Column("prompts", no_wrap=True), Column("updated", no_wrap=True), box=box.SIMPLE_HEAD,
        )  # fmt: skip
        for row in frame.itertuples():
            tags = f" [dim]({escape(row.tags)})[/]" if row.tags else ""
            name = f"{escape(row.name)}{tags}\n[dim]{escape(row.dataset)}: {escape(row.filter)}[/]"
            status = f"{row.status}\n[red]{row.errors} errors[/]" if row.errors else row.status
            table.add_row(row.id, name, status, row.prompts, row.updated)
        out.print(table)

    run_command(body)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="Run id, unique id prefix or name.")],
    store: StoreOption = None,
    as_json: JsonFlag = False,
) -> None:
    """A run's name, manifest, parameters, progress and errors."""

    def body() -> None:
        from infoflow.store import ResultsStore
        from infoflow.store.summary import details_rows, run_details

        with ResultsStore.open(store, read_only=True) as results:
            details = run_details(results, run_id)
        if as_json:
            print_json(details)
            return
        table = Table(Column(style="bold", no_wrap=True), Column(overflow="fold"), box=None, show_header=False)
        for field, text in details_rows(details):
            table.add_row(field, text)
        out.print(table, highlight=False)
        out.print(f"{details['n_rows']} rows, {details['n_errors']} prompts with errors")
        for error in details["errors"]:
            out.print(f"  prompt {error['prompt_id']}: {error['reason']}", highlight=False)

    run_command(body)


@runs_app.command("label")
def runs_label(
    run_id: Annotated[str, typer.Argument(help="Run id, unique id prefix or name.")],
    name: Annotated[str | None, typer.Option("--name", help="The run's new name (unique in the store).")] = None,
    tags: Annotated[list[str] | None, typer.Option("--tag", help="A tag to add (repeat it).")] = None,
    untags: Annotated[list[str] | None, typer.Option("--untag", help="A tag to remove (repeat it).")] = None,
    store: StoreOption = None,
) -> None:
    """Name a run, or tag it: `infoflow runs label RUN --name baseline --tag paper`."""

    def body() -> None:
        from infoflow.store import ResultsStore

        with ResultsStore.open(store) as results:
            run = results.label_run(run_id, name=name, tags=tags or (), untag=untags or ())
        tagged = f" (tags: {', '.join(run.tags)})" if run.tags else ""
        out.print(f"run {run.run_id}: {run.name}{tagged}", highlight=False)

    run_command(body)


@runs_app.command("export")
def runs_export(
    run_id: str,
    path: Path,
    table: Annotated[str | None, typer.Option(help="Table to export (default: the run's own).")] = None,
    store: StoreOption = None,
) -> None:
    """Export a run's rows to Parquet or CSV (by the file suffix)."""

    def body() -> None:
        from infoflow.store import ResultsStore

        with ResultsStore.open(store, read_only=True) as results:
            written = results.export(run_id, path, table=table)
        out.print(f"wrote {written}")

    run_command(body)


@runs_app.command("delete")
def runs_delete(
    run_id: str, store: StoreOption = None, yes: Annotated[bool, typer.Option("--yes", "-y")] = False
) -> None:
    """Delete a run and all its rows."""

    def body() -> None:
        from infoflow.store import ResultsStore

        if not yes and not typer.confirm(f"delete run {run_id} and all its rows?"):
            raise typer.Exit(1)
        with ResultsStore.open(store) as results:
            results.delete_run(run_id)
        out.print(f"deleted {run_id}")

    run_command(body)


@app.command()
def report(
    run_ids: Annotated[list[str] | None, typer.Argument(help="Runs to include \\[default: every run].")] = None,
    output: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("infoflow-report.html"),
    heatmap_prompts: Annotated[int, typer.Option(help="Heatmaps shown per run.")] = 4,
    x_axis: Annotated[str, typer.Option("--x", help="depth (%) or window (index).")] = "depth",
    store: StoreOption = None,
) -> None:
    """One self-contained HTML file with the figures and summary tables of runs."""

    def body() -> None:
        from infoflow.report import write_report
        from infoflow.store import ResultsStore

        with ResultsStore.open(store, read_only=True) as results:
            path = write_report(results, run_ids or None, output, heatmap_prompts=heatmap_prompts, x=x_axis)
        out.print(f"report: {path.resolve()}")

    run_command(body)


@app.command()
def plot(
    run_ids: Annotated[list[str], typer.Argument(help="info-flow or heatmap runs (several: compared as lines).")],
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNG and PDF files.")] = Path("figures"),
    metric: Annotated[str, typer.Option(help="diff (% change of p) or hit (% still top-1).")] = "diff",
    lines: Annotated[str, typer.Option(help="model, feature_category or window_size.")] = "model",
    x_axis: Annotated[str, typer.Option("--x", help="depth (%) or window (index).")] = "depth",
    store: StoreOption = None,
) -> None:
    """Publication figures (PNG and PDF): info-flow curves with 95 % bands, or heatmaps of p - p0."""

    def body() -> None:
        from infoflow.plots import heatmap_figure, info_flow_figure, runs_frame, save_figure
        from infoflow.store import ResultsStore

        with ResultsStore.open(store, read_only=True) as results:
            kinds = {str(results.run(run_id).manifest.kind) for run_id in run_ids}
            if len(kinds) != 1 or not kinds <= {"info_flow", "heatmap"}:
                raise CliError(f"plot takes runs of one kind, info_flow or heatmap; got {sorted(kinds)}")
            kind = kinds.pop()
            frame = runs_frame(results, run_ids, kind)
        output.mkdir(parents=True, exist_ok=True)
        written = []
        if kind == "info_flow":
            figure = info_flow_figure(frame, lines=lines, metric=metric, x=x_axis)
            written += save_figure(figure, output / f"info-flow-{'-'.join(run_ids)}-{metric}")
        else:
            for prompt_id in sorted(frame["prompt_id"].unique()):
                figure = heatmap_figure(frame, int(prompt_id), x=x_axis)
                written += save_figure(figure, output / f"heatmap-{'-'.join(run_ids)}-prompt{prompt_id}")
        for path in written:
            out.print(f"wrote {path}")

    run_command(body)


@app.command()
def presets(
    name: Annotated[str | None, typer.Argument(help="Preset to save.")] = None,
    expression: Annotated[str | None, typer.Argument(help="Its filter expression.")] = None,
) -> None:
    """List saved prompt-filter presets, or save one: `infoflow presets NAME 'EXPRESSION'`."""

    def body() -> None:
        from infoflow.experiments.filters import load_presets, save_preset

        if name is not None:
            if expression is None:
                raise CliError("give the preset's filter expression after its name")
            out.print(f"saved preset {name!r} to {save_preset(name, expression)}")
            return
        for preset, text in sorted(load_presets().items()):
            out.print(f"{preset}: {text}")

    run_command(body)


@app.command(name="app")
def web_app(
    store: StoreOption = None,
    port: Annotated[int, typer.Option(help="Port of the web app.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "localhost",
) -> None:
    """The web app (Streamlit): browse, compare and explore information flow in the browser."""
    import subprocess

    from infoflow.app.launcher import streamlit_command

    command, env = streamlit_command(store, port, host)
    out.print(f"infoflow app on http://{host}:{port} (Ctrl-C stops it)")
    raise typer.Exit(subprocess.call(command, env=env))


@app.command()
def figures(
    models: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="A model of the set (repeat it) \\[default: the 4 built-in models]."),
    ] = None,
    dataset: Dataset = "synthetic",
    dataset_file: DatasetFile = None,
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for figures, tables and index.md.")] = Path(
        "figures"
    ),
    store: StoreOption = None,
    dataset_filter: Annotated[
        str | None, typer.Option("--filter", help="Prompt filter \\[default: all-correct(every model of the set)].")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Prompts per figure (a seeded sample).")] = 100,
    candidates: Annotated[
        int, typer.Option(min=0, help="Prompts evaluated to find those the filter keeps (seeded sample; 0: all).")
    ] = 1000,
    heatmaps: Annotated[int, typer.Option(min=1, help="Prompts drawn as heatmaps.")] = 3,
    seed: Seed = 0,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    batch_size: BatchSize = None,
    quiet: Quiet = False,
) -> None:
    """The papers' figure set: runs what the store lacks, then draws info-flow, feature-category, window-size,
    prompt-order and heatmap figures (PNG + PDF) and a first-position-bias table, indexed in index.md."""

    def body() -> None:
        from infoflow.figures import BUILTIN_MODELS, FigureSetOptions, make_figures

        options = FigureSetOptions(
            dataset=dataset,
            dataset_file=dataset_file,
            prompt_filter=dataset_filter,
            n_prompts=limit,
            candidates=candidates or None,
            n_heatmaps=heatmaps,
            seed=seed,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            show_progress=not quiet,
        )
        index = make_figures(models or BUILTIN_MODELS, output, store, options, progress=console.print)
        out.print(f"figures: {index.resolve()}")

    run_command(body)


def main() -> None:
    app(sys.argv[1:])
