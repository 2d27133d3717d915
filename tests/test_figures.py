"""`infoflow figures`: the figure set for built-in models, resumed from the store; the analyses around it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from infoflow.cli import app
from infoflow.data import FactPrompt
from infoflow.data.synthetic import SyntheticFacts
from infoflow.figures import first_position_bias, prompt_order, window_sizes_for
from infoflow.store import ResultsStore

MODELS = ("builtin-mamba1", "builtin-gpt2")


def row_count(store: Path) -> int:
    with duckdb.connect(str(store), read_only=True) as con:
        tables = [t for (t,) in con.execute("select table_name from information_schema.tables").fetchall()]
        return sum(con.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables)


@pytest.fixture(scope="module")
def figure_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    folder = tmp_path_factory.mktemp("figures")
    store, out = folder / "results.duckdb", folder / "out"
    args = ["figures", *(a for m in MODELS for a in ("-m", m)), "-n", "4", "--candidates", "60", "--heatmaps", "2"]
    args += ["--seed", "1"]  # a sample of 4 that holds both prompt orders (seed 0 draws 4 subject-first prompts)
    args += ["--store", str(store), "--out", str(out), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return store, out, args


def test_figure_set_files(figure_set: tuple[Path, Path, list[str]]) -> None:
    _, out, _ = figure_set
    sizes = window_sizes_for(8)
    expected = ["info-flow", "info-flow-mamba1", "info-flow-gpt2", "feature-categories-builtin-mamba1"]
    expected += [f"window-sizes-{m}" for m in MODELS] + ["prompt-order-subject-first", "prompt-order-relation-first"]
    expected += ["sublayer-knockout"] + [
        f"{kind}-{m}" for kind in ("causal-tracing", "vocab-projection") for m in MODELS
    ]
    for stem in expected:
        assert (out / f"{stem}.png").stat().st_size > 10_000, stem
        assert (out / f"{stem}.pdf").exists(), stem
    assert not (out / "feature-categories-builtin-gpt2.png").exists()  # attention models have no decay features
    heatmaps = sorted(p.name for p in out.glob("heatmap-*.png"))
    assert len(heatmaps) == 2 + len(sizes) - 1  # 2 prompts at window size 4, the first at every other size
    index = (out / "index.md").read_text()
    assert "4 prompts" in index
    assert "np." not in index and f"window sizes {', '.join(map(str, sizes))}." in index  # plain numbers
    assert all(f"({stem}.png)" in index for stem in expected)
    bias = pd.read_csv(out / "first-position-bias.csv")
    assert sorted(bias["model"]) == sorted(MODELS)
    assert (bias["min_diff_subject"] < -30).all()  # both models lose the fact without the subject


def test_figure_set_resumes_without_new_rows(figure_set: tuple[Path, Path, list[str]]) -> None:
    store, _, args = figure_set
    before = row_count(store)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert row_count(store) == before


def test_a_model_that_does_not_load_leaves_no_store(tmp_path: Path) -> None:
    """The command fails with the model's error and removes the store it had just created; an existing store
    is left as it was."""
    store = tmp_path / "new" / "results.duckdb"
    args = ["figures", "-m", "no-such-model", "--store", str(store), "--out", str(tmp_path / "out"), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "no-such-model" in result.output
    assert not store.exists()
    existing = tmp_path / "existing.duckdb"
    with ResultsStore.open(existing):
        pass
    assert CliRunner().invoke(app, [*args[:3], "--store", str(existing), *args[5:]]).exit_code == 1
    assert existing.exists()


def test_prompt_order_matches_the_templates() -> None:
    prompts = SyntheticFacts(n_entities=5).eval_prompts()
    orders = {prompt_order(p) for p in prompts}
    assert orders == {"subject first", "relation first"}
    for prompt in prompts:
        assert (prompt_order(prompt) == "subject first") == prompt.extras["subject_first"]
    leading_space = FactPrompt(prompt_id=0, prompt=" Ann Lee lives in", subject="Ann Lee", target=" Rome")
    assert prompt_order(leading_space) == "subject first"


def test_first_position_bias_compares_first_with_the_strongest_source() -> None:
    rows = []
    for model, first_diff in (("biased", -60.0), ("unbiased", -1.0)):
        for prompt_id in range(3):
            for source, diff in (("subject", -80.0), ("relation", -40.0), ("first", first_diff)):
                for start in range(3):
                    depth_diff = diff if start == 1 else diff / 4  # strongest in the middle window
                    rows.append(
                        dict(model=model, prompt_id=prompt_id, target="last", source=source, feature_category="all",
                             window_size=2, window_start=start, diff=depth_diff + prompt_id, hit=False)
                    )  # fmt: skip
    table = first_position_bias(pd.DataFrame(rows)).set_index("model")
    assert table.loc["biased", "min_diff_first"] == pytest.approx(-59.0)  # mean of -60, -59, -58
    assert table.loc["biased", "strongest_other"] == "subject"
    assert table.loc["biased", "first_share"] == pytest.approx(-59.0 / -79.0)
    assert table.loc["unbiased", "first_share"] == pytest.approx(0.0 / -79.0)
    with pytest.raises(ValueError, match="first"):
        first_position_bias(pd.DataFrame(rows).query("source != 'first'"))
