"""Run specs: a TOML file that says what to run (model(s), data, prompt selection, computation, experiments with
their options), so that a study can be shared, versioned and run again (``infoflow run SPEC``); and the spec of
any stored run (``infoflow runs export-spec RUN``), whose run reproduces it: the same manifest, so the same run
id and rows.

A spec::

    models = ["builtin-mamba1"]        # or model = "..."; every experiment runs on each model
    dataset = "synthetic"
    filter = "correct"
    limit = 20
    seed = 0
    candidates = 1000                  # also: dataset_file, store, device, dtype, engine, batch_size, threads

    [[experiment]]
    kind = "info_flow"                 # evaluate, info_flow, heatmap or attention
    window_sizes = [4]                 # and the options of the kind (EXPERIMENT_OPTIONS)
    sources = ["subject", "last"]
    name = "subject flow"              # optional: the run's name and tags
    tags = ["paper"]

Importing this module imports no torch; running a spec loads what it names.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from infoflow.experiments.request import RunRequest
from infoflow.naming import derived_run_name

# The keys of a spec's top level: RunRequest's fields, less what only the running process decides.
REQUEST_KEYS = ("dataset", "dataset_file", "filter", "limit", "seed", "candidates", "store", "device", "dtype",
                "engine", "batch_size", "threads")  # fmt: skip
KNOCKOUT_OPTIONS = ("mode", "strict", "exempt_fraction")
# The options of each experiment kind (their defaults are the experiments' own).
EXPERIMENT_OPTIONS: dict[str, tuple[str, ...]] = {
    "evaluate": ("top_k",),
    "info_flow": ("targets", "sources", "feature_categories", "window_sizes", *KNOCKOUT_OPTIONS),
    "heatmap": ("window_size", *KNOCKOUT_OPTIONS),
    "attention": ("layers", "per_feature"),
}
LABEL_KEYS = ("name", "tags")
# Parameters a run records that follow from the model or the request, not from the experiment's options.
COMPUTED_PARAMS = ("n_layers", "engine", "dtype", "device")
SELECTION = re.compile(
    r"(?P<filter>.*?)(?: \| sample (?P<limit>\d+) by hash \(seed (?P<seed>-?\d+)\))?"
    r"(?: among (?P<candidates>\d+) candidates \(seed -?\d+\))?(?:; only \d+ of \d+ pass)?"
)


class SpecError(ValueError):
    """A spec file that cannot be run; the message names the file's mistake and the fix."""


@dataclass(frozen=True)
class ExperimentSpec:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunSpec:
    models: tuple[str, ...]
    request: dict[str, Any]  # RunRequest's fields (REQUEST_KEYS) as given
    experiments: tuple[ExperimentSpec, ...]

    def run_request(self, model: str, **overrides: Any) -> RunRequest:
        values = {**self.request, **{k: v for k, v in overrides.items() if v is not None}}
        for key in ("dataset_file", "store"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return RunRequest(model=model, **values)


def parse_spec(data: Mapping[str, Any], source: str = "the spec") -> RunSpec:
    """A spec from its TOML table; every mistake is a ``SpecError`` that names the key and what it takes."""
    data = dict(data)
    models = data.pop("models", None)
    model = data.pop("model", None)
    if (models is None) == (model is None):
        raise SpecError(f'{source}: give `model = "NAME"` or `models = ["NAME", ...]` (one of them)')
    models = [model] if model is not None else models
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise SpecError(f"{source}: `models` must be a list of model names, got {models!r}")
    experiments = data.pop("experiment", None)
    if not isinstance(experiments, list) or not experiments:
        raise SpecError(
            f"{source}: add at least one [[experiment]] table with a `kind` ({', '.join(EXPERIMENT_OPTIONS)})"
        )
    unknown = sorted(set(data) - set(REQUEST_KEYS))
    if unknown:
        raise SpecError(f"{source}: unknown key(s) {unknown}; the top level takes model(s), {', '.join(REQUEST_KEYS)}")
    return RunSpec(tuple(models), data, tuple(_experiment(e, i, source) for i, e in enumerate(experiments, 1)))


def _experiment(table: Any, index: int, source: str) -> ExperimentSpec:
    where = f"{source}, experiment {index}"
    if not isinstance(table, dict) or table.get("kind") not in EXPERIMENT_OPTIONS:
        kind = table.get("kind") if isinstance(table, dict) else table
        raise SpecError(f"{where}: kind must be one of {', '.join(EXPERIMENT_OPTIONS)}, not {kind!r}")
    options = {k: v for k, v in table.items() if k not in ("kind", *LABEL_KEYS)}
    allowed = EXPERIMENT_OPTIONS[table["kind"]]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SpecError(f"{where} ({table['kind']}): unknown option(s) {unknown}; it takes {', '.join(allowed)}")
    tags = table.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise SpecError(f"{where}: tags must be a list of strings, got {tags!r}")
    return ExperimentSpec(table["kind"], options, table.get("name"), tuple(tags))


def load_spec(path: str | Path) -> RunSpec:
    """The spec in a TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        message = f"no spec file {str(path)!r}; `infoflow runs export-spec RUN -o FILE` writes one"
        raise FileNotFoundError(message) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML ({error})") from None
    return parse_spec(data, str(path))


# --- from a stored run ---


def parse_selection(recorded: str) -> dict[str, Any]:
    """The request fields (filter, limit, seed, candidates) of a run's recorded prompt selection, the inverse of
    ``filters.describe_selection`` / ``describe_candidates`` (and a shortfall note, which the run repeats)."""
    match = SELECTION.fullmatch(recorded)
    assert match is not None  # the pattern's parts are all optional
    out: dict[str, Any] = {"filter": match["filter"]}
    if match["limit"] is not None:
        out |= {"limit": int(match["limit"]), "seed": int(match["seed"])}
    if match["candidates"] is not None:
        out["candidates"] = int(match["candidates"])
    return out


def run_spec(store: Any, run_id: str) -> dict[str, Any]:
    """The spec (as a TOML table) of a stored run: running it reproduces the run's manifest, so its id and rows."""
    run = store.run(run_id)
    m = run.manifest
    params = dict(m.params)
    spec: dict[str, Any] = {"model": m.model_id, "dataset": m.dataset, **parse_selection(m.dataset_filter)}
    spec |= {key: params[key] for key in ("device", "dtype", "engine") if key in params}
    options = {k: v for k, v in params.items() if k not in COMPUTED_PARAMS}
    unknown = sorted(set(options) - set(EXPERIMENT_OPTIONS[str(m.kind)]))
    if unknown:
        raise SpecError(f"run {run.run_id} has parameters {unknown} that a spec cannot set yet; it cannot be exported")
    experiment: dict[str, Any] = {"kind": str(m.kind), **options}
    if run.name != derived_run_name(m.model_id, str(m.kind), params):
        experiment["name"] = run.name
    if run.tags:
        experiment["tags"] = list(run.tags)
    return {**spec, "experiment": [experiment]}


def to_toml(spec: Mapping[str, Any], comment: str = "") -> str:
    """A spec table as TOML: scalars and lists of scalars at the top, then each ``[[experiment]]``."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"{key} = {_value(value)}" for key, value in spec.items() if key != "experiment" and value is not None]
    for experiment in spec.get("experiment", []):
        lines += ["", "[[experiment]]", *(f"{k} = {_value(v)}" for k, v in experiment.items() if v is not None)]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"a spec holds strings, numbers, booleans and lists, not {value!r}")


# --- running ---


def experiment_runner(kind: str) -> Callable[..., str]:
    """(context, prompts, options) -> run id, for an experiment kind of a spec."""
    from infoflow.data.spans import TokenType
    from infoflow.experiments.attention import attention
    from infoflow.experiments.evaluate import evaluate
    from infoflow.experiments.heatmap import heatmap as heatmap_run
    from infoflow.experiments.info_flow import InfoFlowParams
    from infoflow.experiments.info_flow import info_flow as info_flow_run
    from infoflow.experiments.plans import KnockoutOptions
    from infoflow.interventions.knockout import FeatureCategory, KnockoutMode, default_window_size

    def knockout(options: dict[str, Any]) -> KnockoutOptions:
        chosen = {k: options[k] for k in KNOCKOUT_OPTIONS if k in options}
        if "mode" in chosen:
            chosen["mode"] = KnockoutMode(chosen["mode"])
        return KnockoutOptions(**chosen)

    def info_flow(context, prompts, options: dict[str, Any]) -> str:
        defaults = InfoFlowParams()
        params = InfoFlowParams(
            targets=tuple(TokenType(t) for t in options.get("targets", defaults.targets)),
            sources=tuple(TokenType(s) for s in options.get("sources", defaults.sources)),
            feature_categories=tuple(FeatureCategory(c) for c in options.get("feature_categories", ["all"])),
            window_sizes=tuple(options.get("window_sizes", [default_window_size(context.loaded.model.n_layers)])),
            options=knockout(options),
        )
        return info_flow_run(context, prompts, params)

    def heatmap(context, prompts, options: dict[str, Any]) -> str:
        size = options.get("window_size", default_window_size(context.loaded.model.n_layers))
        return heatmap_run(context, prompts, size, knockout(options))

    runners: dict[str, Callable[..., str]] = {
        "evaluate": lambda context, prompts, options: evaluate(context, prompts, **options),
        "info_flow": info_flow,
        "heatmap": heatmap,
        "attention": lambda context, prompts, options: attention(
            context, prompts, options.get("layers"), options.get("per_feature", False)
        ),
    }
    return runners[kind]


@dataclass(frozen=True)
class SpecResult:
    model: str
    kind: str
    run_id: str


Opener = Callable[[RunRequest, Sequence[Any]], AbstractContextManager[Any]]


def run_spec_file(spec: RunSpec, *, opener: Opener | None = None, **overrides: Any) -> list[SpecResult]:
    """Run every experiment of the spec on each of its models (resuming what the store holds); ``overrides``
    replace request fields (the command line's --store, --threads, ...); ``opener`` opens a request's run on the
    spec's prompts (default: ``open_run``). Every model's request is checked before any work."""
    from infoflow.experiments.evaluate import evaluate
    from infoflow.experiments.request import load_prompts_of, open_run
    from infoflow.experiments.runner import RunLabel

    requests = [spec.run_request(model, **overrides) for model in spec.models]
    opener = opener or (lambda request, prompts: open_run(request, prompts=prompts))
    prompts = load_prompts_of(requests[0])
    named = [r for r in requests if any(r.model in other.filter for other in requests if other is not r)]
    for request in named:  # a filter that reads another model's ranks (all-correct(...)): complete evaluations first
        with opener(request, prompts) as run:
            evaluate(replace(run.context, dataset_filter="all"), prompts)
    results = []
    for request in requests:
        with opener(request, prompts) as run:
            context, chosen = run.choose()
            for experiment in spec.experiments:
                name = experiment.name
                if name is not None and len(requests) > 1:
                    name = f"{name} · {request.model}"
                label = RunLabel(experiment.kind, name, experiment.tags)
                run_id = experiment_runner(experiment.kind)(replace(context, label=label), chosen, experiment.options)
                results.append(SpecResult(request.model, experiment.kind, run_id))
    return results


__all__ = [
    "EXPERIMENT_OPTIONS",
    "ExperimentSpec",
    "RunSpec",
    "SpecError",
    "load_spec",
    "parse_selection",
    "parse_spec",
    "run_spec",
    "run_spec_file",
    "to_toml",
]
