"""Optional parts of infoflow and the extra that installs each (``pip install 'infoflow[EXTRA]'``).

The core (library and command line) needs none of them; a feature whose extra is missing says which
``pip install`` brings it, in one line.
"""

from __future__ import annotations

import importlib.util

EXTRAS: dict[str, tuple[str, ...]] = {
    "app": ("streamlit", "plotly"),  # the web app
    "ray": ("ray",),  # --ray: chunks of a run on a Ray cluster
    "hub-data": ("datasets",),  # CounterFact from the Hugging Face hub
}


class MissingExtraError(ImportError):
    """A feature needs packages of an extra that is not installed."""


def install_command(extra: str) -> str:
    return f"pip install 'infoflow[{extra}]'"


def require_extra(extra: str, feature: str) -> None:
    """Raise ``MissingExtraError`` naming the ``pip install`` to run unless every package of ``extra`` can be
    imported (checked without importing them)."""
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise MissingExtraError(
            f"{feature} needs {' and '.join(missing)}, which {verb} not installed: {install_command(extra)}"
        )
