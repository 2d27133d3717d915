"""Optional extras: the core depends on none of their packages, and a feature whose extra is missing says in one
line which ``pip install`` brings it (the missing package simulated by a None entry in ``sys.modules``)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from infoflow.data import load_dataset
from infoflow.data.errors import DatasetUnavailableError
from infoflow.experiments.distributed import RayExecutor, WorkerSpec
from infoflow.extras import EXTRAS, MissingExtraError, require_extra
from tests.cli_support import MODEL, invoke, wide_consoles

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0] for requirement in requirements}


def test_pyproject_extras_match_the_code() -> None:
    extras = PYPROJECT["optional-dependencies"]
    for extra, packages in EXTRAS.items():
        assert names(extras[extra]) == set(packages), extra
        assert not set(packages) & names(PYPROJECT["dependencies"]), f"{extra} packages in the core"
    assert extras["all"] == [f"infoflow[{','.join(EXTRAS)}]"]


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``without(name)``: importing ``name`` fails from now on in this test, as if it were not installed."""
    return lambda name: monkeypatch.setitem(sys.modules, name, None)


def test_require_extra(without: Callable[[str], None]) -> None:
    require_extra("app", "the web app")  # installed here
    without("plotly")
    with pytest.raises(MissingExtraError) as error:
        require_extra("app", "the web app")
    assert str(error.value) == "the web app needs plotly, which is not installed: pip install 'infoflow[app]'"


def test_app_command_names_its_extra(without: Callable[[str], None], monkeypatch: pytest.MonkeyPatch) -> None:
    wide_consoles(monkeypatch)
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("streamlit must not start"))
    without("streamlit")
    output = invoke("app", code=1).output
    assert output == "error: the web app needs streamlit, which is not installed: pip install 'infoflow[app]'\n"


def test_ray_option_names_its_extra(
    without: Callable[[str], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wide_consoles(monkeypatch)
    without("ray")
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'infoflow[ray]'")):
        RayExecutor(WorkerSpec(MODEL))
    args = ["evaluate", "-m", MODEL, "--filter", "ids(0)", "--store", tmp_path / "r.duckdb", "--ray", "local"]
    output = invoke(*args, code=1).output
    assert output.splitlines()[-1] == (
        "error: running on a Ray cluster needs ray, which is not installed: pip install 'infoflow[ray]'"
    )


def test_counterfact_from_the_hub_names_its_extra(without: Callable[[str], None]) -> None:
    without("datasets")
    with pytest.raises(DatasetUnavailableError, match=re.escape("pip install 'infoflow[hub-data]'")):
        load_dataset("counterfact")


@pytest.mark.slow  # a fresh interpreter imports torch
def test_core_imports_none_of_the_extras() -> None:
    """The library and command line import no package of an extra (a core install lacks them)."""
    code = (
        "import sys\n"
        "import infoflow.cli, infoflow.experiments.registry, infoflow.experiments.request, infoflow.report\n"
        "print(sorted({'ray', 'streamlit', 'plotly', 'datasets'} & set(sys.modules)))\n"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert imported.stdout.strip() == "[]"
