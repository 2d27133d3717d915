"""docs/tutorial.ipynb runs from top to bottom with the built-in models and shows what its stored outputs show."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"

pytestmark = pytest.mark.slow


def outputs(notebook: nbformat.NotebookNode) -> list[list[str]]:
    """Per code cell: the kinds of rich output (image/png, text/html) it displayed."""
    return [
        sorted(kind for output in cell.outputs for kind in output.get("data", {}) if kind != "text/plain")
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]


def test_tutorial_executes_and_reproduces_its_outputs(tmp_path: Path) -> None:
    stored = nbformat.read(NOTEBOOK, as_version=4)
    fresh = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(fresh, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert outputs(fresh) == outputs(stored)  # the same figures and tables, cell by cell
    assert outputs(stored).count(["image/png"]) == 5
    text = "".join(o.get("text", "") for cell in fresh.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "20 prompts, 400 rows" in text  # 20 prompts x 4 sources x 5 windows
    assert "# Figure set" in text and (tmp_path / "tutorial-figures" / "info-flow.png").exists()
    assert (tmp_path / "info_flow.parquet").exists()
