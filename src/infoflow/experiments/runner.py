"""Running an experiment over prompts into the results store: resumable, one prompt per transaction.

A run is identified by its manifest (experiment, model and revision, dataset and filter, parameters, and what
else changes a number: engine, dtype and device type); running the same command again resumes it, skipping
prompts already complete or recorded as errors. Ctrl-C leaves the run partial with every finished prompt stored.

The batch size and chunk size are not part of the identity: they change how prompts are grouped, which moves
results by floating-point rounding only. The device type is: CUDA kernels (cuDNN convolutions in TF32, other
reduction orders) move results by more than that, so a run started on a GPU never resumes on a CPU.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console

from infoflow.data.prompts import FactPrompt
from infoflow.data.spans import PromptError, TokenSpans, find_spans_many
from infoflow.experiments.in_flight import Flight, landed
from infoflow.experiments.progress import progress_bar
from infoflow.naming import short_model_name
from infoflow.store import Manifest, ResultsStore, Run, StoreError, StoreWarning

if TYPE_CHECKING:  # experiment modules import this module's types without torch
    import torch

    from infoflow.engines.base import Engine
    from infoflow.models.load import LoadedModel

Rows = list[dict[str, Any]]
PromptJob = Callable[[FactPrompt, TokenSpans], Rows]  # raises PromptError for an unusable prompt
Chunk = list[tuple[FactPrompt, TokenSpans]]
ChunkJob = Callable[[Chunk], list[Rows | PromptError]]  # per prompt of a chunk


class ModelContext(Protocol):
    """What a chunk job computes with: a run's context, or a Ray worker holding its own copy of the model."""

    @property
    def loaded(self) -> LoadedModel: ...

    @property
    def engine(self) -> Engine: ...


JobFactory = Callable[[ModelContext], ChunkJob]  # picklable (a module-level function or a partial of one)
Mark = Callable[[Chunk, int | None, int | None], None]  # a chunk about to compute, its need and the memory free


@dataclass(frozen=True)
class SizedJob:
    """A chunk job that predicts a chunk's peak memory in bytes on ``device`` (``infoflow.engines.memory``), so
    that a chunk that does not fit in the memory available runs prompt by prompt, and a prompt that does not fit
    alone is refused with its need instead of taking the machine down."""

    job: ChunkJob
    needs: Callable[[Chunk], int]
    device: torch.device

    def __call__(self, chunk: Chunk) -> list[Rows | PromptError]:
        return self.job(chunk)


class ChunkExecutor(Protocol):
    """Runs ``make_job``'s chunk job on chunks elsewhere (e.g. on a Ray cluster); yields (chunk index, results)
    in the order they complete. ``device_type`` (cpu, cuda, ...) is where the chunks compute."""

    device_type: str

    def map(self, make_job: JobFactory, chunks: list[Chunk]) -> Iterator[tuple[int, list[Rows | PromptError]]]: ...


@dataclass(frozen=True)
class RunLabel:
    """The name and tags of the run of ``kind`` that a command starts (not of the runs it needs first, such as
    the evaluation behind a prompt filter); a run without a name gets one derived from its manifest."""

    kind: str
    name: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunContext:
    """Everything a run needs besides its per-prompt job."""

    loaded: LoadedModel
    engine: Engine
    store: ResultsStore
    dataset: str
    dataset_filter: str = "all"
    show_progress: bool = True
    executor: ChunkExecutor | None = None  # None: chunks run in this process
    label: RunLabel | None = None


def run_prompts(
    context: RunContext,
    kind: str,
    params: dict[str, Any],
    prompts: Sequence[FactPrompt],
    make_job: JobFactory,
    chunk_size: int | None = None,
) -> str:
    """Run ``make_job``'s chunk job on chunks of the prompts not yet done in the run of this manifest, here or on
    ``context.executor``; each chunk's rows, and each prompt's reason for being skipped, are stored (by this
    process only) as the chunk completes. Returns the run id.

    Prompts run shortest first, in chunks of ``chunk_size`` prompts (default: as many as the engine runs in one
    clean pass), so that a chunk's prompts mostly share one length and so one clean pass and one tail group.
    """
    manifest = Manifest(
        kind=kind,
        model_id=context.loaded.name,
        model_revision=context.loaded.revision,
        dataset=context.dataset,
        dataset_filter=context.dataset_filter,
        params={**params, **computation_params(context)},
        n_prompts=len(prompts),
    )
    run = start_run(context, manifest)
    alone = land_in_flight(context.store, run.run_id)
    done = context.store.completed_prompts(run.run_id)
    todo = [p for p in prompts if p.prompt_id not in done]
    status = "partial"
    try:
        with progress_bar(context.show_progress) as progress:
            label = f"{kind} {short_model_name(context.loaded.name)}"
            task = progress.add_task(label, total=len(prompts), completed=len(done))
            usable = usable_prompts(context, run.run_id, todo)
            progress.advance(task, len(todo) - len(usable))  # prompts whose reason for being skipped is stored
            usable.sort(key=lambda item: item[1].num_tokens)  # stable: equal lengths keep their order
            chunks = chunked(usable, chunk_size or context.engine.prompts_per_call, alone)
            for index, rows in compute_chunks(context, make_job, chunks, run.run_id):
                store_rows(context.store, run.run_id, chunks[index], rows)
                progress.advance(task, len(chunks[index]))
        status = "complete"
    finally:
        with contextlib.suppress(StoreError):  # marks of a failed write stay; they are harmless
            context.store.clear_in_flight(run.run_id)
        context.store.finish_run(run.run_id, status)
    return run.run_id


def land_in_flight(store: ResultsStore, run_id: str) -> set[int]:
    """Deal with the prompts a process left in flight (see ``infoflow.experiments.in_flight``): record those the
    out-of-memory killer ended while they ran alone as failed; return those it ended in a larger chunk, to run
    alone."""
    left = store.in_flight(run_id)
    if not left:
        return set()
    errors, alone = landed(left)
    if errors:
        store.add_errors(run_id, errors)
    store.clear_in_flight(run_id)
    return alone


def chunked(usable: Chunk, size: int, alone: set[int]) -> list[Chunk]:
    """Chunks of ``size`` prompts, in order; the prompts of ``alone`` each in a chunk of its own."""
    shared = [item for item in usable if item[0].prompt_id not in alone]
    chunks = [shared[start : start + size] for start in range(0, len(shared), size)]
    return chunks + [[item] for item in usable if item[0].prompt_id in alone]


def computation_params(context: RunContext) -> dict[str, Any]:
    """What the run's numbers depend on besides the experiment's parameters (part of the run's identity)."""
    weight = context.loaded.model.lm_head.weight
    device = context.executor.device_type if context.executor is not None else weight.device.type
    return {
        "n_layers": context.loaded.model.n_layers,
        "engine": context.engine.name,
        "dtype": str(weight.dtype).removeprefix("torch."),
        "device": device,
    }


def start_run(context: RunContext, manifest: Manifest) -> Run:
    """Start or resume the run of ``manifest`` with the context's name and tags if it is of their kind; what the
    store warns about (a resume across infoflow versions, an older run not resumed) is printed as one line."""
    label = context.label if context.label is not None and context.label.kind == manifest.kind else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        run = context.store.start_run(manifest, name=label and label.name, tags=label.tags if label else ())
    for warning in caught:
        if issubclass(warning.category, StoreWarning):
            Console(stderr=True, soft_wrap=True).print(f"[yellow]note:[/] {warning.message}", highlight=False)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return run


def compute_chunks(
    context: RunContext, make_job: JobFactory, chunks: list[Chunk], run_id: str
) -> Iterator[tuple[int, list[Rows | PromptError]]]:
    """(chunk index, results) of every chunk as it completes: on the executor, or here one chunk after another,
    each marked in flight in the store while it computes."""
    if context.executor is not None:
        yield from context.executor.map(make_job, chunks)
        return
    job = make_job(context)

    def mark(chunk: Chunk, need: int | None, free: int | None) -> None:
        flight = Flight.now(len(chunk), need, free)
        context.store.mark_in_flight(run_id, [prompt.prompt_id for prompt, _ in chunk], flight.to_json())

    for index, chunk in enumerate(chunks):
        yield index, run_chunk(chunk, job, mark)


def usable_prompts(context: RunContext, run_id: str, chunk: Sequence[FactPrompt]) -> Chunk:
    """The prompts of a chunk with their spans; the reason of every prompt that cannot be used is stored."""
    max_positions = context.loaded.model.max_positions
    spans = [check_length(s, max_positions) for s in find_spans_many(context.loaded.tokenizer, chunk)]
    return record_errors(context.store, run_id, chunk, spans)


def check_length(spans: TokenSpans | PromptError, max_positions: int | None) -> TokenSpans | PromptError:
    """A prompt longer than the model's position limit becomes a ``PromptError`` (it costs that prompt only)."""
    if isinstance(spans, TokenSpans) and max_positions is not None and spans.num_tokens > max_positions:
        return PromptError(f"prompt has {spans.num_tokens} tokens but the model supports at most {max_positions}")
    return spans


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA out-of-memory error, the CPU allocator failing, or Python's ``MemoryError``."""
    import torch

    message = str(error)
    return isinstance(error, torch.OutOfMemoryError | MemoryError) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in message or "not enough memory" in message)
    )


def run_chunk(usable: Chunk, job: ChunkJob, mark: Mark | None = None) -> list[Rows | PromptError]:
    """Results of a chunk; a chunk that is predicted not to fit in memory (a ``SizedJob``), or runs out of it,
    runs again prompt by prompt, and a prompt that does not fit alone gets a ``PromptError`` instead of ending the
    run. ``mark`` is told each chunk (with its predicted need and the memory free) before it computes."""
    need, free = memory_check(usable, job)
    if isinstance(job, SizedJob) and need is not None and free is not None and need > free:
        if len(usable) > 1:
            return [result for item in usable for result in run_chunk([item], job, mark)]
        return [memory_error(usable, job, need, free)]
    if mark is not None:
        mark(usable, need, free)
    try:
        return job(usable)
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if len(usable) == 1:
        tokens = usable[0][1].num_tokens
        return [PromptError(f"out of memory on this prompt ({tokens} tokens) even alone; use a smaller model or dtype")]
    return [result for item in usable for result in run_chunk([item], job, mark)]


def memory_check(usable: Chunk, job: ChunkJob) -> tuple[int | None, int | None]:
    """(predicted peak bytes of the chunk, bytes available): None where the job predicts nothing or the memory
    available is not known."""
    if not isinstance(job, SizedJob) or not usable:
        return None, None
    from infoflow.engines.memory import available

    return job.needs(usable), available(job.device)


def memory_error(usable: Chunk, job: SizedJob, need: int, free: int) -> PromptError:
    """The error of a prompt predicted not to fit in the memory available."""
    from infoflow.engines.memory import gigabytes

    tokens = max(spans.num_tokens for _, spans in usable)
    return PromptError(
        f"needs ~{gigabytes(need)} of memory ({tokens} tokens), {gigabytes(free)} available on {job.device.type}; "
        "not run (use a machine with more memory, a smaller model or dtype, or a shorter prompt)"
    )


def record_errors(
    store: ResultsStore, run_id: str, chunk: Sequence[FactPrompt], spans: Sequence[TokenSpans | PromptError]
) -> Chunk:
    """Store the reason of every prompt whose spans failed; return the usable ones."""
    errors = {p.prompt_id: s.reason for p, s in zip(chunk, spans, strict=True) if isinstance(s, PromptError)}
    if errors:
        store.add_errors(run_id, errors)
    return [(p, s) for p, s in zip(chunk, spans, strict=True) if not isinstance(s, PromptError)]


def run_each(usable: Chunk, job: PromptJob) -> list[Rows | PromptError]:
    """A per-prompt job over a chunk; a prompt that raises PromptError gets its error instead of rows."""
    results: list[Rows | PromptError] = []
    for prompt, spans in usable:
        try:
            results.append(job(prompt, spans))
        except PromptError as error:
            results.append(error)
    return results


def store_rows(store: ResultsStore, run_id: str, usable: Chunk, results: list[Rows | PromptError]) -> None:
    """A chunk's errors, then its rows with its prompts marked complete (one transaction)."""
    pairs = list(zip(usable, results, strict=True))
    errors = {p.prompt_id: r.reason for (p, _), r in pairs if isinstance(r, PromptError)}
    if errors:
        store.add_errors(run_id, errors)
    completed = [(p.prompt_id, r) for (p, _), r in pairs if not isinstance(r, PromptError)]
    if completed:
        store.add_rows(run_id, [row for _, rows in completed for row in rows], done=[i for i, _ in completed])


def with_ids(prompt: FactPrompt, rows: Iterable[dict[str, Any]]) -> Rows:
    return [{"prompt_id": prompt.prompt_id, **row} for row in rows]
