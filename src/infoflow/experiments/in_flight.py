"""Prompts in flight: a chunk's prompts are marked in the store before it computes, and their rows or error
remove the marks. Marks found when a run resumes are of a process that ended while computing them; if the
machine's out-of-memory killer has killed a process since they were made (Linux counts its kills in
``/proc/vmstat``), the prompts are not run as before: a prompt that was computed alone is recorded as failed,
the prompts of a larger chunk run one by one. Marks without that evidence (``kill -9``, a power cut, another
system) are run again as usual.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


def oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has killed since boot (None: not known here)."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


@dataclass(frozen=True)
class Flight:
    """What is known when a chunk starts computing: its size, its predicted need and the memory available
    (bytes, None where not predicted), and the machine's out-of-memory kill count and boot."""

    prompts: int
    need: int | None
    free: int | None
    oom_kills: int | None
    boot: str | None

    @classmethod
    def now(cls, prompts: int, need: int | None = None, free: int | None = None) -> Flight:
        return cls(prompts, need, free, oom_kills(), boot_id())

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Flight:
        try:
            values = json.loads(text)
            return cls(**{name: values.get(name) for name in cls.__dataclass_fields__})
        except (ValueError, TypeError, AttributeError):
            return cls(0, None, None, None, None)

    def killed_for_memory(self) -> bool:
        """The out-of-memory killer has killed a process on this machine since this mark, in the same boot."""
        kills = oom_kills()
        return None not in (kills, self.oom_kills) and self.boot == boot_id() and kills > self.oom_kills  # type: ignore[operator]

    def reason(self) -> str:
        from infoflow.engines.memory import gigabytes

        predicted = f"; predicted need ~{gigabytes(self.need)}" if self.need is not None else ""
        free = f", {gigabytes(self.free)} available" if self.free is not None else ""
        return (
            "the process was killed while computing this prompt alone, by the operating system's out-of-memory "
            f"killer{predicted}{free}; not run again (use a machine with more memory, a smaller model or dtype, "
            "or a shorter prompt)"
        )


def landed(left: dict[int, str]) -> tuple[dict[int, str], set[int]]:
    """From the marks a process left: (the errors of prompts the out-of-memory killer ended while they were
    computed alone, the prompts of larger chunks it ended that are to run one by one)."""
    errors, alone = {}, set()
    for prompt, text in left.items():
        flight = Flight.from_json(text)
        if not flight.killed_for_memory():
            continue
        if flight.prompts == 1:
            errors[prompt] = flight.reason()
        else:
            alone.add(prompt)
    return errors, alone
