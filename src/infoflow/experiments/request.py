"""One request for a run, whichever door it comes through (command line, demo, figure set, web app): which
model, data and prompt selection, on which device, precision and engine; and ``open_run``, which loads what
the request names and yields the run's context and prompts.

Importing this module imports no torch: the command line builds and checks a request before it loads anything.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from infoflow.experiments.filters import FilterContext, describe_candidates, describe_selection, select
from infoflow.models.registry import check_model_name

if TYPE_CHECKING:
    from infoflow.data.prompts import FactPrompt
    from infoflow.experiments.runner import RunContext
    from infoflow.models.load import LoadedModel
    from infoflow.store import ResultsStore

logger = logging.getLogger("infoflow")
DEFAULT_MODEL = "builtin-mamba1"
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
Choice = TypeVar("Choice", bound=StrEnum)


class Precision(StrEnum):
    """The dtype of the model's weights and activations."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class EngineName(StrEnum):
    """fast: clean runs reused, knockouts batched; reference: one forward pass per knockout."""

    FAST = "fast"
    REFERENCE = "reference"


def check_device(device: str) -> str:
    """``device`` if it is auto, cpu, cuda or cuda:N; else a ``ValueError``."""
    if not DEVICE.fullmatch(device):
        raise ValueError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return device


def resolve_device(device: str) -> str:
    """``device``, with auto replaced by cuda when a CUDA GPU is available, else cpu."""
    if device != "auto":
        return device
    import torch  # here: a request is built and checked without torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class RunRequest:
    """What a run computes on and with. The experiment (evaluate, info-flow, ...) and its parameters are not
    part of it: one request serves every experiment of a command, a figure set or a web-app launch."""

    model: str = DEFAULT_MODEL  # an alias, hub id, folder or .gguf file
    dataset: str = "synthetic"  # a named dataset or a CSV/JSONL/Parquet file
    dataset_file: Path | None = None  # a local copy of a named dataset
    filter: str = "all"  # the prompt filter expression
    limit: int | None = None  # at most this many of the prompts the filter keeps (a seeded sample)
    seed: int = 0
    candidates: int | None = None  # filter only a seeded sample of this many prompts of the dataset; None: all
    store: Path | None = None  # the results store; None: $INFOFLOW_STORE or the default file
    device: str = "auto"  # auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N
    dtype: Precision = Precision.FLOAT32
    engine: EngineName = EngineName.FAST
    batch_size: int | None = None  # knockout rows per batched tail pass (fast engine); None: it sizes them
    threads: int | None = None  # CPU threads of torch in this process; None: leave them as they are
    ray: str | None = None  # the address of a Ray cluster to run chunks on (local, auto, HOST:PORT)
    ray_workers: int | None = None  # None: one per GPU (cuda) or CPU of the cluster
    show_progress: bool = True

    def __post_init__(self) -> None:
        check_model_name(self.model)
        # the filter's syntax and presets, before any work (ranks are looked up only when prompts are chosen)
        select(self.filter, FilterContext(universe=frozenset(), model=self.model, ranks=lambda model: {}))
        check_device(self.device)
        object.__setattr__(self, "dtype", choice(Precision, self.dtype, "dtype"))
        object.__setattr__(self, "engine", choice(EngineName, self.engine, "engine"))
        for name in ("limit", "candidates", "batch_size", "threads", "ray_workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1, got {value}")

    def selection(self, n_candidates: int | None = None) -> str:
        """How the prompts are chosen, as the run's manifest records it (``n_candidates``: of the sample)."""
        selection = describe_selection(self.filter, self.limit, self.seed)
        return selection if n_candidates is None else describe_candidates(selection, n_candidates, self.seed)


def choice(kind: type[Choice], value: str, name: str) -> Choice:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"unknown {name} {value!r}; choose {', '.join(kind)}") from None


@dataclass(frozen=True)
class OpenRun:
    """A request with what it names loaded: the run context (model, engine, store) and the dataset's prompts
    (the candidate sample when the request has one). ``note`` says what the user should know about the
    selection (fewer prompts pass the filter than the limit asks for)."""

    request: RunRequest
    context: RunContext
    prompts: list[FactPrompt]
    note: Callable[[str], None] = logger.warning

    @property
    def loaded(self) -> LoadedModel:
        return self.context.loaded

    def choose(self) -> tuple[RunContext, list[FactPrompt]]:
        """The prompts the request's filter keeps (evaluating the model only as far as they need its ranks), at
        most ``limit`` of them drawn with its seed, and the context whose recorded selection says any shortfall;
        a ``ValueError`` when there is none."""
        from infoflow.experiments.selection import choose

        request = self.request
        selection = choose(self.context, self.prompts, request.filter, request.limit, request.seed)
        if not selection.prompts:
            raise ValueError(f"the filter {request.filter!r} selects no prompt of {request.dataset}")
        if selection.shortfall:
            self.note(selection.shortfall)
        recorded = selection.recorded(self.context.dataset_filter)
        return replace(self.context, dataset_filter=recorded), selection.prompts


def load_model_of(request: RunRequest) -> LoadedModel:
    """The request's model, on its device (the CPU under Ray: the workers compute, this process only tokenizes
    and writes the store)."""
    from infoflow.models import load_model

    device = "cpu" if request.ray else resolve_device(request.device)
    return load_model(request.model, device=device, dtype=str(request.dtype))


def load_prompts_of(request: RunRequest) -> list[FactPrompt]:
    """The request's dataset, or its seeded sample of ``candidates`` prompts."""
    from infoflow.data import load_dataset
    from infoflow.experiments.selection import sample_prompts

    prompts = load_dataset(request.dataset, path=request.dataset_file)
    return prompts if request.candidates is None else sample_prompts(prompts, request.candidates, request.seed)


@contextmanager
def open_run(
    request: RunRequest,
    *,
    loaded: LoadedModel | None = None,
    store: ResultsStore | None = None,
    prompts: Sequence[FactPrompt] | None = None,
    status: Callable[[str], AbstractContextManager[object]] = nullcontext,
    note: Callable[[str], None] = logger.warning,
) -> Iterator[OpenRun]:
    """Apply the request's threads, load its model and dataset, open its store, start Ray workers when it asks
    for them, and yield the open run; the store (when opened here) and the workers end with the block.

    ``loaded``, ``store`` and ``prompts`` replace what the request would load (a model the caller holds, an
    open store, prompts typed in): a given model keeps its device. ``status`` shows what is being done
    (e.g. a spinner) while the model loads; ``note`` what the user should know about the prompts chosen.
    """
    from infoflow.engines.base import make_engine
    from infoflow.experiments.distributed import RayExecutor, WorkerSpec
    from infoflow.experiments.runner import RunContext
    from infoflow.experiments.threads import apply_threads
    from infoflow.store import ResultsStore

    if request.threads is not None:
        apply_threads(request.threads)
    if loaded is None:
        with status(f"loading {request.model}"):
            loaded = load_model_of(request)
    prompts = list(prompts) if prompts is not None else load_prompts_of(request)
    with ExitStack() as stack:
        executor = None
        if request.ray:
            spec = WorkerSpec(
                request.model, request.device, str(request.dtype), str(request.engine), request.batch_size
            )
            executor = RayExecutor(spec, request.ray, request.ray_workers)
            stack.callback(executor.close)
        if store is None:
            store = stack.enter_context(ResultsStore.open(request.store))
        context = RunContext(
            loaded=loaded,
            engine=make_engine(request.engine, loaded.model, request.batch_size),
            store=store,
            dataset=request.dataset,
            dataset_filter=request.selection(len(prompts) if request.candidates is not None else None),
            show_progress=request.show_progress,
            executor=executor,
        )
        yield OpenRun(request, context, prompts, note)
