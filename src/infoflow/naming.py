"""Short, readable names of models, prompt filters and runs, for tables, legends and progress bars (no torch)."""

from __future__ import annotations

import re
from pathlib import Path


def short_model_name(name: str) -> str:
    """A label for figures and progress bars: a local path's file or folder name; aliases and hub ids as is."""
    return name.rstrip("/").rsplit("/", 1)[-1] if name.count("/") > 1 or Path(name).exists() else name


SEPARATOR = " · "
DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
# Parameter values a derived run name leaves out (the defaults of the experiments and the command line); a test
# checks them against the experiments' own defaults.
QUIET_PARAMS: dict[str, object] = {
    "targets": ["last"],
    "sources": ["subject", "relation", "last", "first"],
    "feature_categories": ["all"],
    "mode": "zero-attention",
    "strict": False,
    "exempt_fraction": 1 / 3,
    "mixers": "all",  # recorded only when a knockout reaches some mixers (attention, recurrent, ...)
    "engine": "fast",
    "dtype": "float32",
    "device": "cpu",
    "per_feature": False,
}
SHORT_KEYS = {"feature_categories": "features", "exempt_fraction": "exempt"}
_IDS = re.compile(r"\bids\(([^()]*)\)")


def _param_part(key: str, value: object) -> str:
    """One parameter as a name part: ``ws9``, ``bf16``, ``strict``, ``sources=subject,last``, ..."""
    if key in ("window_sizes", "window_size"):
        return "ws" + ",".join(map(str, value if isinstance(value, list) else [value]))
    if key == "dtype":
        return DTYPES.get(str(value), str(value))
    if key in ("mode", "engine", "device"):
        return str(value)
    if isinstance(value, bool):
        return key.replace("_", "-") if value else f"no-{key.replace('_', '-')}"
    key = SHORT_KEYS.get(key, key)
    if isinstance(value, list):
        return f"{key}={','.join(map(str, value))}"
    return f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"


def derived_run_name(model_id: str, kind: str, params: dict[str, object]) -> str:
    """A run's name from what sets it apart: model, experiment, window sizes and layers, then every parameter
    that is not its default, e.g. ``builtin-mamba1 · info_flow · ws9 · bf16``."""
    shown = [k for k in ("window_sizes", "window_size", "layers") if params.get(k)]
    shown += [k for k, default in QUIET_PARAMS.items() if k in params and params[k] != default]
    return SEPARATOR.join([short_model_name(model_id), kind, *(_param_part(k, params[k]) for k in shown)])


def short_filter(text: str, width: int = 40) -> str:
    """A prompt filter as shown in tables and titles: ``ids(...)`` lists become their count, and what is still
    longer than ``width`` ends in an ellipsis."""
    short = _IDS.sub(lambda m: f"ids({len([i for i in m.group(1).split(',') if i.strip()])} prompts)", text)
    return short if len(short) <= width else short[: width - 1] + "…"
