"""The ``infoflow`` command line.

Importing it imports no torch, and neither do ``--help``, ``--version``, ``models``, ``runs``, ``report``, ``plot``
and every argument error: each command imports what it runs.
"""

from __future__ import annotations

import errno
import functools
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from infoflow.data.spans import TokenType
from infoflow.experiments.request import DEFAULT_MODEL, EngineName, Precision, RunRequest, check_device
from infoflow.experiments.threads import THREADS_VARIABLE, resolve_threads
from infoflow.interventions.knockout import FeatureCategory, KnockoutMode, default_window_size
from infoflow.models.modes import Site, mode_help, strict_help

if TYPE_CHECKING:
    from infoflow.experiments.request import OpenRun

app = typer.Typer(
    help="Trace how factual information flows through language models (attention, Mamba and other recurrences, "
    "hybrids), by knockout.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="List, show, export and delete runs in the results store.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
console = Console(stderr=True)
out = Console()

RUN_PANEL = "Model, data and prompts"
COMPUTE_PANEL = "Computation"

Model = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Alias (see `infoflow models`), hub id, folder or .gguf.", rich_help_panel=RUN_PANEL
    ),
]
Dataset = Annotated[
    str,
    typer.Option(
        "--dataset",
        "-d",
        help="counterfact, known_1000, synthetic, or a CSV/JSONL/Parquet file.",
        rich_help_panel=RUN_PANEL,
    ),
]
DatasetFile = Annotated[
    Path | None,
    typer.Option("--dataset-file", help="A local copy of a named dataset (no download).", rich_help_panel=RUN_PANEL),
]
StoreOption = Annotated[
    Path | None,
    typer.Option("--store", help="Results store file \\[default: $INFOFLOW_STORE or ./infoflow-results.duckdb]"),
]
FilterOption = Annotated[
    str, typer.Option("--filter", help="Prompt filter, e.g. 'correct and not ids(3)'.", rich_help_panel=RUN_PANEL)
]
Limit = Annotated[
    int | None,
    typer.Option(
        "--limit", "-n", min=1, help="At most this many prompts (a seeded sample).", rich_help_panel=RUN_PANEL
    ),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the prompt sample.", rich_help_panel=RUN_PANEL)]


def parse_device(text: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N."""
    try:
        return check_device(text)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


Device = Annotated[
    str,
    typer.Option(
        "--device",
        parser=parse_device,
        metavar="auto|cpu|cuda|cuda:N",
        autocompletion=lambda: ["auto", "cpu", "cuda"],
        help="auto: a CUDA GPU when there is one, else the CPU.",
        rich_help_panel=COMPUTE_PANEL,
    ),
]
Dtype = Annotated[Precision, typer.Option("--dtype", help="Precision of the model.", rich_help_panel=COMPUTE_PANEL)]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        envvar=THREADS_VARIABLE,
        help="CPU threads of torch \\[default: the CPUs less the machine's load, at most 4].",
        rich_help_panel=COMPUTE_PANEL,
    ),
]


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
        rich_help_panel=COMPUTE_PANEL,
    ),
]
EngineOption = Annotated[
    EngineName,
    typer.Option("--engine", help="reference: one forward pass per knockout.", rich_help_panel=COMPUTE_PANEL),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or progress lines.")]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Run chunks of prompts on a Ray cluster: local (start one here), auto (`ray start` on this machine) "
        "or HOST:PORT. This process alone writes the store (docs/scale-out.md).",
        rich_help_panel=COMPUTE_PANEL,
    ),
]
RayWorkers = Annotated[
    int | None,
    typer.Option(
        "--ray-workers",
        min=1,
        help="Ray workers \\[default: one per GPU (cuda) or CPU].",
        rich_help_panel=COMPUTE_PANEL,
    ),
]


class CliError(Exception):
    """An error shown to the user as one line, without a traceback."""


# Failures shown as one line, by (module, class). Only the classes of modules already imported are looked up:
# an error cannot come from a module that was never imported, and importing them all would import torch.
EXPECTED_ERRORS = (
    ("infoflow.models.loading", "ModelLoadError"),
    ("infoflow.data.errors", "DatasetError"),
    ("infoflow.experiments.filters", "FilterError"),
    ("infoflow.store.errors", "StoreError"),
    ("infoflow.extras", "MissingExtraError"),
)
# ConnectionError: no Ray cluster at --ray's address
BUILTIN_EXPECTED_ERRORS: tuple[type[Exception], ...] = (CliError, FileNotFoundError, ValueError, ConnectionError)


# An OSError of these kinds is the file system refusing a write (permissions, read-only, full); others are bugs.
DENIED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
debug = False  # --debug: show the traceback of every failure


def expected_errors() -> tuple[type[Exception], ...]:
    imported = [getattr(sys.modules[module], name) for module, name in EXPECTED_ERRORS if module in sys.modules]
    return (*BUILTIN_EXPECTED_ERRORS, *imported)


def error_line(error: Exception, writes: str) -> str | None:
    """The one line an expected failure is shown as (None: not expected); ``writes`` says how the command's user
    chooses where it writes (e.g. ``--out``)."""
    if isinstance(error, OSError) and error.errno in DENIED | FULL:
        place = f" {error.filename}" if error.filename else ""
        fix = "free disk space, or write elsewhere" if error.errno in FULL else "write to a folder you can write to"
        return f"cannot write{place}: {error.strerror or error}; {fix} ({writes})"
    if not isinstance(error, expected_errors()):
        return None
    from infoflow.errors import cli_message

    return cli_message(error)


def run_command(function: Callable[..., Any], *args: Any, writes: str = "--out", **kwargs: Any) -> Any:
    """Run a command body; expected failures print one clear line and exit 1 (``--debug``: with the traceback),
    Ctrl-C exits 130. ``writes``: how the user chooses where the command writes."""
    try:
        return function(*args, **kwargs)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished prompts are stored; run the same command again to resume")
        raise typer.Exit(130) from None
    except Exception as error:
        line = error_line(error, writes)
        if line is None or debug:
            raise
        console.print(f"[red]error:[/] {escape(line)}", soft_wrap=True)  # one line, whatever the width
        raise typer.Exit(1) from None


@dataclass(frozen=True)
class SharedOption:
    annotation: Any  # an Annotated alias above
    default: Any


# The options of every experiment command, named as RunRequest's fields (quiet: not show_progress).
RUN_OPTIONS: dict[str, SharedOption] = {
    "model": SharedOption(Model, DEFAULT_MODEL),
    "dataset": SharedOption(Dataset, "synthetic"),
    "dataset_file": SharedOption(DatasetFile, None),
    "filter": SharedOption(FilterOption, "all"),
    "limit": SharedOption(Limit, None),
    "seed": SharedOption(Seed, 0),
    "store": SharedOption(StoreOption, None),
    "device": SharedOption(Device, "auto"),
    "dtype": SharedOption(Dtype, Precision.FLOAT32),
    "engine": SharedOption(EngineOption, EngineName.FAST),
    "batch_size": SharedOption(BatchSize, None),
    "threads": SharedOption(Threads, None),
    "ray": SharedOption(RayAddress, None),
    "ray_workers": SharedOption(RayWorkers, None),
    "quiet": SharedOption(Quiet, False),
}


def run_request(*, quiet: bool, threads: int | None, **options: Any) -> RunRequest:
    """The request of an experiment command's shared options (threads: resolved here, so that the run applies
    them)."""
    return RunRequest(**options, threads=resolve_threads(threads), show_progress=not quiet)


def run_options(fixed: Mapping[str, Any] | None = None, **defaults: Any) -> Callable[[Callable[..., None]], Any]:
    """Give an experiment command the shared options of ``RUN_OPTIONS`` after its own; the command receives the
    ``RunRequest`` they make as its first argument, and runs under ``run_command``. ``defaults`` change an
    option's default for this command; ``fixed`` leaves options out, with the value the request takes."""
    fixed = dict(fixed or {})

    def decorate(command: Callable[..., None]) -> Any:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]  # after the request
        shared = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(name, option.default),
                              annotation=option.annotation)
            for name, option in RUN_OPTIONS.items()
            if name not in fixed
        ]  # fmt: skip
        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared

        @functools.wraps(command)
        def wrapper(**values: Any) -> None:
            options = {**fixed, **{p.name: values.pop(p.name) for p in shared}}
            run_command(lambda: command(run_request(**options), **values), writes="--store")

        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


@contextmanager
def opened(request: RunRequest, prompts: Sequence[Any] | None = None) -> Iterator[OpenRun]:
    """``open_run`` of the request (on ``prompts`` when given), with a spinner while the model loads."""
    from infoflow.experiments.request import open_run

    def note(text: str) -> None:
        console.print(f"[yellow]note:[/] {escape(text)}", soft_wrap=True)

    spinner = lambda text: console.status(text, spinner="dots")  # noqa: E731
    with open_run(request, prompts=prompts, status=spinner, note=note) as run:
        yield run


def print_done(kind: str, run_id: str, context) -> None:
    run = context.store.run(run_id)
    console.print(
        f"[green]{kind} run {run_id}[/] {run.status}: model {context.loaded.name}, dataset {context.dataset} "
        f"({run.manifest.n_prompts} prompts) in {context.store.path}"
    )


def store_flag(request: RunRequest) -> str:
    """`` --store PATH`` where the command was given one, for the commands it prints to copy."""
    import shlex

    return "" if request.store is None else f" --store {shlex.quote(str(request.store))}"


def print_version(asked: bool) -> None:
    if asked:
        from infoflow.store.manifest import package_version

        out.print(f"infoflow {package_version()}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    show_traceback: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of a failure instead of its one-line error.")
    ] = False,
) -> None:
    global debug
    debug = show_traceback


@app.command()
def demo(
    model: Model = DEFAULT_MODEL,
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for the results store and report.")] = Path(
        "infoflow-demo"
    ),
    prompts: Annotated[int, typer.Option("--prompts", "-n", min=1, help="Prompts in the info-flow sweep.")] = 100,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """The main job, offline: info-flow sweep and heatmaps of the built-in model, then the HTML report."""

    def body() -> None:
        from infoflow.demo import run_demo

        request = RunRequest(model=model, device=device, threads=resolve_threads(threads), show_progress=not quiet)
        report_path = run_demo(output, request, n_prompts=prompts)
        out.print(f"report: {report_path.resolve()}")

    run_command(body)


@app.command()
def models(as_json: JsonFlag = False) -> None:
    """List the supported models and their short aliases."""
    from infoflow.models.registry import list_models

    entries = list_models()
    if as_json:
        print_json([
            {"alias": e.alias, "family": e.family, "layers": e.n_layers, "source": e.hub_id or "package",
             "description": e.description}
            for e in entries
        ])  # fmt: skip
        return
    wide = out.width >= 120  # below that the descriptions fold into tall rows: left out, and said so
    longest = max(len(entry.alias) for entry in entries)  # aliases are typed: never cut
    columns = [Column("alias", min_width=longest, no_wrap=True), "family", "layers", Column("source", overflow="fold")]
    caption = None if wide else "descriptions: a terminal of 120 columns or more, or --json"
    table = Table(*columns, *([Column("description", overflow="fold")] if wide else []), caption=caption)
    for entry in entries:
        row = [entry.alias, entry.family, str(entry.n_layers or ""), entry.hub_id or "package"]
        table.add_row(*row, *([entry.description] if wide else []))
    out.print(table)


@app.command(name="evaluate")
@run_options()
def evaluate_command(request: RunRequest) -> None:
    """Clean next-token distribution per prompt: p0, rank and top-1 correctness of the target."""
    from infoflow.experiments.evaluate import evaluate

    with opened(request) as run:
        context, chosen = run.choose()
        run_id = evaluate(context, chosen)
        frame = context.store.frame(run_id, "evaluate")
        print_done("evaluate", run_id, context)
        out.print(f"top-1 accuracy {frame['correct'].mean():.1%} on {len(frame)} prompts")


def parse_mixers(text: str) -> str:
    """``--mixers``: all, attention, recurrent (ssm) or mixer kinds, in canonical form."""
    from infoflow.interventions.mixers import Mixers

    try:
        return Mixers(text).value
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


MixersOption = Annotated[
    str,
    typer.Option(
        "--mixers",
        parser=parse_mixers,
        metavar="all|attention|recurrent|KINDS",
        help="Knock out edges only in these mixers (hybrids): attention layers, recurrent layers (ssm), or mixer "
        "kinds such as ssd,gated_delta; windows stay windows of all layers.",
    ),
]

ModeOption = Annotated[KnockoutMode, typer.Option(help=mode_help())]
StrictOption = Annotated[bool, typer.Option(help=strict_help())]


@app.command(name="info-flow")
@run_options(filter="correct")
def info_flow_command(
    request: RunRequest,
    targets: Annotated[list[TokenType], typer.Option("--target", help="Target token type(s).")] = [TokenType.LAST],  # noqa: B006
    sources: Annotated[list[TokenType] | None, typer.Option("--source", help="Source token type(s).")] = None,
    feature_categories: Annotated[
        list[FeatureCategory],
        typer.Option(
            "--features",
            help="Feature categories of the recurrent layers (a hybrid's attention layers are knocked out whole): "
            "all; fast_decay = context-dependent (slow-decay) features knocked out; slow_decay = context-independent "
            "(fast-decay) features knocked out.",
        ),
    ] = [FeatureCategory.ALL],  # noqa: B006
    window_sizes: Annotated[
        list[int] | None, typer.Option("--window-size", "-w", help="Window size(s) \\[default: 9, or half the depth].")
    ] = None,
    mode: ModeOption = KnockoutMode.ZERO_ATTENTION,
    strict: StrictOption = False,
    exempt_fraction: Annotated[float, typer.Option(help="Fraction of features a category exempts.")] = 1 / 3,
    mixers: MixersOption = "all",
) -> None:
    """Knock out target <- source edges in every window of layers and record the target's probability."""
    from infoflow.experiments.info_flow import InfoFlowParams, info_flow
    from infoflow.experiments.plans import KnockoutOptions
    from infoflow.interventions.mixers import Mixers

    with opened(request) as run:
        model = run.loaded.model
        params = InfoFlowParams(
            targets=tuple(targets),
            sources=tuple(sources or InfoFlowParams().sources),
            feature_categories=tuple(feature_categories),
            window_sizes=tuple(window_sizes or [default_window_size(model.n_layers)]),
            options=KnockoutOptions(mode=mode, strict=strict, exempt_fraction=exempt_fraction, mixers=Mixers(mixers)),
        )
        params.check_model(model)  # before any work, selection included
        context, chosen = run.choose()
        run_id = info_flow(context, chosen, params)
        print_done("info-flow", run_id, context)
        out.print(f"figures and tables: infoflow report {run_id}{store_flag(request)}", highlight=False)


@app.command(name="heatmap")
@run_options(filter="correct", limit=5)
def heatmap_command(
    request: RunRequest,
    window_size: Annotated[
        int | None, typer.Option("--window-size", "-w", help="\\[default: 9, or half the depth]")
    ] = None,
    mode: ModeOption = KnockoutMode.ZERO_ATTENTION,
    strict: StrictOption = False,
    mixers: MixersOption = "all",
) -> None:
    """Knock out last <- each position in every window: a tokens x windows map of the target's probability."""
    from infoflow.experiments.heatmap import EXPERIMENT, HeatmapParams
    from infoflow.experiments.plans import KnockoutOptions
    from infoflow.interventions.mixers import Mixers

    with opened(request) as run:
        model = run.loaded.model
        size = window_size if window_size is not None else default_window_size(model.n_layers)
        options = KnockoutOptions(mode=mode, strict=strict, mixers=Mixers(mixers))
        params = EXPERIMENT.prepare(HeatmapParams(size, options), model)  # before work
        context, chosen = run.choose()
        run_id = EXPERIMENT.run(context, chosen, params)
        print_done("heatmap", run_id, context)
        out.print(f"figures: infoflow report {run_id}{store_flag(request)}", highlight=False)


@app.command(name="attention")
@run_options(fixed={"engine": EngineName.REFERENCE, "batch_size": None, "ray": None, "ray_workers": None}, limit=1)
def attention_command(
    request: RunRequest,
    layers: Annotated[list[int] | None, typer.Option("--layer", help="Layer(s) to export \\[default: all].")] = None,
    per_feature: Annotated[bool, typer.Option(help="Also every channel's / head's own matrix.")] = False,
) -> None:
    """Export hidden-attention matrices (mean over channels/heads, optionally each) for prompts."""
    from infoflow.experiments.attention import attention, check_layers

    with opened(request) as run:
        check_layers(run.loaded.model, layers)  # before any work, selection included
        context, chosen = run.choose()
        run_id = attention(context, chosen, layers, per_feature)
        print_done("attention", run_id, context)
        out.print(f"export: infoflow runs export {run_id} attention.parquet{store_flag(request)}", highlight=False)


class FigureFormat(StrEnum):
    PNG = "png"
    PDF = "pdf"
    SVG = "svg"


class ColumnWidth(StrEnum):
    SINGLE = "single"
    DOUBLE = "double"


@app.command(name="run")
def run_spec_command(
    spec: Annotated[Path, typer.Argument(help="A run spec (TOML): model(s), data, prompts and experiments.")],
    store: StoreOption = None,
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Run what a spec file describes (docs/figures.md#run-specs); `infoflow runs export-spec RUN` writes the spec
    of any stored run, and running it reproduces the run."""

    def body() -> None:
        from infoflow.spec import load_spec, run_spec_file

        loaded = load_spec(spec)
        overrides = {"store": store, "threads": resolve_threads(threads), "show_progress": not quiet}
        results = run_spec_file(loaded, opener=opened, **overrides)
        for result in results:
            console.print(f"[green]{result.kind} run {result.run_id}[/]: model {result.model}")
        ids = " ".join(dict.fromkeys(r.run_id for r in results))
        out.print(f"figures and tables: infoflow report {ids}{f' --store {store}' if store else ''}")

    run_command(body)


Sites = Annotated[list[Site] | None, typer.Option("--site", help="Site(s): residual, mixer, mlp \\[default: all].")]


def sites_of(model: Any, chosen: list[Site] | None, allowed: tuple[Site, ...]) -> tuple[Site, ...]:
    """The sites asked for, or every allowed site the model has (no MLP on Mamba)."""
    from infoflow.interventions.sites import model_sites

    return tuple(chosen) if chosen else model_sites(model, allowed)


def run_recall(
    run: OpenRun, label: str, params: Any, check: Callable[[Any, Any], Any], experiment: Callable[..., str]
) -> None:
    """``check(params, model)`` before any work, choose the prompts, run ``experiment`` on them."""
    check(params, run.loaded.model)
    context, chosen = run.choose()
    run_id = experiment(context, chosen, params)
    print_done(label, run_id, context)
    out.print(f"figure: infoflow plot {run_id}")


@app.command(name="sublayer-knockout")
@run_options(filter="correct")
def sublayer_knockout_command(
    request: RunRequest,
    sites: Sites = None,
    targets: Annotated[list[TokenType], typer.Option("--target", help="Target token type(s).")] = [TokenType.LAST],  # noqa: B006
    window_sizes: Annotated[
        list[int] | None, typer.Option("--window-size", "-w", help="Window size(s) \\[default: 9, or half the depth].")
    ] = None,
) -> None:
    """Zero the mixer's or the MLP's update at the target in every window of layers (Geva et al. 2023, §5)."""
    from infoflow.experiments.sublayer_knockout import SUBLAYERS, SublayerKnockoutParams, prepare, sublayer_knockout

    with opened(request) as run:
        model = run.loaded.model
        params = SublayerKnockoutParams(
            sites=sites_of(model, sites, SUBLAYERS),
            targets=tuple(targets),
            window_sizes=tuple(window_sizes or [default_window_size(model.n_layers)]),
        )
        run_recall(run, "sublayer-knockout", params, prepare, sublayer_knockout)


@app.command(name="causal-tracing")
@run_options(filter="correct", limit=20)
def causal_tracing_command(
    request: RunRequest,
    sites: Sites = None,
    window_size: Annotated[int, typer.Option("--window-size", "-w", min=1, help="Layers restored around each.")] = 1,
    samples: Annotated[int | None, typer.Option(min=1, help="Noise samples per prompt \\[default: 10].")] = None,
    noise: Annotated[float, typer.Option(help="Noise std in units of the subject embeddings' std.")] = 3.0,
    corruption: Annotated[
        str,
        typer.Option(
            metavar="noise|counterfactual",
            help="noise: Gaussian noise on the subject's embeddings; counterfactual: the subject's tokens swapped for "
            "another prompt's subject of as many tokens (one corrupted run).",
        ),
    ] = "noise",
) -> None:
    """Corrupt the subject, restore one site's clean value per (layer, position): the recovered probability."""
    from infoflow.experiments.causal_tracing import CORRUPTIONS, CausalTracingParams, causal_tracing

    if corruption not in CORRUPTIONS:
        raise typer.BadParameter(f"--corruption is {' or '.join(CORRUPTIONS)}, not {corruption!r}")
    if corruption == "counterfactual" and samples is not None:
        raise typer.BadParameter("a counterfactual subject is one corrupted run; leave out --samples")
    with opened(request) as run:
        model = run.loaded.model
        all_sites = (Site.RESIDUAL, Site.MIXER, Site.MLP)
        chosen = sites_of(model, sites, all_sites)
        params = CausalTracingParams(chosen, window_size, samples or 10, noise, request.seed, corruption=corruption)
        run_recall(run, "causal-tracing", params, CausalTracingParams.check_model, causal_tracing)


@app.command(name="vocab-projection")
@run_options(
    fixed={"engine": EngineName.REFERENCE, "batch_size": None, "ray": None, "ray_workers": None},
    filter="correct",
    limit=20,
)
def vocab_projection_command(
    request: RunRequest,
    sites: Sites = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Top tokens kept per row.")] = 10,
) -> None:
    """The logit lens: the residual stream and each update at the subject's last and the last position."""
    from infoflow.experiments.vocab_projection import VocabProjectionParams, prepare, vocab_projection

    with opened(request) as run:
        model = run.loaded.model
        params = VocabProjectionParams(sites_of(model, sites, (Site.RESIDUAL, Site.MIXER, Site.MLP)), top_k)
        run_recall(run, "vocab-projection", params, prepare, vocab_projection)


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
        # ids of 8 digits (any unique prefix addresses a run); under each name, its dataset and shortened filter
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

    run_command(body, writes="--store")


@runs_app.command("export")
def runs_export(
    run_id: str,
    path: Path,
    table: Annotated[
        str | None, typer.Option(help="Table to export: the run's own (its experiment's rows; the default) or errors.")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Export a run's rows to Parquet or CSV (by the file suffix)."""

    def body() -> None:
        from infoflow.store import ResultsStore

        with ResultsStore.open(store, read_only=True) as results:
            written = results.export(run_id, path, table=table)
        out.print(f"wrote {written}")

    run_command(body, writes="the PATH argument")


@runs_app.command("export-spec")
def runs_export_spec(
    run_id: Annotated[str, typer.Argument(help="Run id, unique id prefix or name.")],
    output: Annotated[Path | None, typer.Option("--out", "-o", help="The TOML file \\[default: print it].")] = None,
    store: StoreOption = None,
) -> None:
    """The run spec (TOML) of a stored run: `infoflow run` on it reproduces the run (same id, same rows)."""

    def body() -> None:
        from infoflow.spec import run_spec, to_toml
        from infoflow.store import ResultsStore

        with ResultsStore.open(store, read_only=True) as results:
            run = results.run(run_id)
            text = to_toml(run_spec(results, run.run_id), f"infoflow run spec of run {run.run_id} ({run.name})")
        if output is None:
            out.print(text, end="", highlight=False, markup=False, soft_wrap=True)
            return
        output.write_text(text, encoding="utf-8")
        out.print(f"wrote {output}")

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

    run_command(body, writes="--store")


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
    output: Annotated[Path, typer.Option("--out", "-o", help="Folder for the figures.")] = Path("figures"),
    metric: Annotated[str, typer.Option(help="diff (% change of p) or hit (% still top-1).")] = "diff",
    lines: Annotated[str, typer.Option(help="model, feature_category, window_size or mixers.")] = "model",
    x_axis: Annotated[str, typer.Option("--x", help="depth (%) or window (index).")] = "depth",
    title: Annotated[
        str | None, typer.Option(help="The figure's title ('' for none) \\[default: what it shows].")
    ] = None,
    formats: Annotated[
        list[FigureFormat] | None, typer.Option("--format", help="File format (repeat it) \\[default: png and pdf].")
    ] = None,
    dpi: Annotated[int, typer.Option(min=50, max=1200, help="Resolution of PNG files.")] = 200,
    width: Annotated[
        ColumnWidth | None, typer.Option(help="Paper column width, with fonts to match \\[default: natural size].")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Publication figures: info-flow curves with 95 % bands, or heatmaps of p - p0; named after the runs, each
    with a .txt caption that records the runs and prompts."""

    def body() -> None:
        from infoflow.experiments.experiment import FigureOptions
        from infoflow.plots.export import PlotOptions, plot_runs
        from infoflow.store import ResultsStore

        figure = FigureOptions(x=x_axis, metric=metric, lines=lines)  # type: ignore[arg-type]
        chosen = [str(f) for f in formats] if formats else ["png", "pdf"]
        options = PlotOptions(figure, title, chosen, dpi, str(width) if width else None)
        with ResultsStore.open(store, read_only=True) as results:
            written = plot_runs(results, run_ids, output, options)
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
    threads: Threads = None,
) -> None:
    """The web app (Streamlit): browse, compare and explore information flow in the browser."""

    def body() -> int:
        import subprocess

        from infoflow.app.launcher import streamlit_command
        from infoflow.extras import require_extra

        require_extra("app", "the web app")
        command, env = streamlit_command(store, port, host, threads)
        out.print(f"infoflow app on http://{host}:{port} (Ctrl-C stops it)")
        return subprocess.call(command, env=env)

    raise typer.Exit(run_command(body))


@app.command()
def figures(
    models: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="A model of the set (repeat it) \\[default: every built-in model]."),
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
    recall: Annotated[
        bool, typer.Option(help="Also causal tracing (on the heatmap prompts), sublayer knockout, vocab projection.")
    ] = True,
    seed: Seed = 0,
    device: Device = "auto",
    dtype: Dtype = Precision.FLOAT32,
    batch_size: BatchSize = None,
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """The papers' figure set: runs what the store lacks, then draws info-flow, feature-category, window-size,
    prompt-order and heatmap figures, the recall methods' figures (PNG + PDF) and a first-position-bias table,
    indexed in index.md."""

    def body() -> None:
        from infoflow.models.registry import check_model_name

        for name in models or ():
            check_model_name(name)  # a typo fails before anything loads
        from infoflow.figures import BUILTIN_MODELS, FigureSetOptions, make_figures

        options = FigureSetOptions(
            dataset=dataset,
            dataset_file=dataset_file,
            prompt_filter=dataset_filter,
            n_prompts=limit,
            candidates=candidates or None,
            n_heatmaps=heatmaps,
            recall=recall,
            seed=seed,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            threads=resolve_threads(threads),
            show_progress=not quiet,
        )
        index = make_figures(models or BUILTIN_MODELS, output, store, options, progress=console.print)
        out.print(f"figures: {index.resolve()}")

    run_command(body)


def main() -> None:
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
