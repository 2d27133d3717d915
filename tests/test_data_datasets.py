"""Loading datasets: local files of every format, column mapping, clear errors, named datasets, reference ids."""

from __future__ import annotations

import csv
import json
import urllib.error
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infoflow.data import (
    DATASETS,
    DatasetError,
    DatasetUnavailableError,
    FactPrompt,
    as_continuation,
    load_dataset,
    reference_counterfact_index,
    reference_order,
    register_dataset,
    with_reference_ids,
)
from infoflow.data import known_1000 as known_1000_module
from infoflow.data.counterfact import load_counterfact

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COUNTERFACT = SHARED_DATA / "counterfact.parquet"
KNOWN_1000 = SHARED_DATA / "known_1000.json"

ROWS = [
    {"prompt": "The capital of France is", "subject": " France", "target": " Paris", "relation": "capital", "n": 1},
    {"prompt": "Toko Yasuda, the", "subject": "Toko Yasuda", "target": " guitar", "relation": "plays", "n": 2},
]


def write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def needs(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", ".parquet"])
def test_local_files(tmp_path, suffix):
    prompts = load_dataset(write(tmp_path / f"facts{suffix}", ROWS))
    assert [p.prompt_id for p in prompts] == [0, 1]
    first = prompts[0]
    assert (first.prompt, first.subject, first.target, first.relation) == (
        "The capital of France is",
        " France",
        " Paris",  # leading spaces survive every format
        "capital",
    )
    assert first.extras == {"n": "1" if suffix == ".csv" else 1}


def test_column_mapping_and_split(tmp_path):
    rows = [
        {"text": r["prompt"], "entity": r["subject"], "answer": r["target"], "split": s}
        for r, s in zip(ROWS, ["a", "b"], strict=True)
    ]
    path = write(tmp_path / "facts.jsonl", rows)
    columns = {"prompt": "text", "subject": "entity", "target": "answer"}
    prompts = load_dataset(str(path), columns=columns)
    assert [p.target for p in prompts] == [" Paris", " guitar"]
    assert prompts[0].relation is None and prompts[0].extras == {"split": "a"}
    [second] = load_dataset(path, columns=columns, split="b")
    assert second.prompt_id == 1 and second.subject == "Toko Yasuda"


def test_wrong_columns_name_the_available_ones(tmp_path):
    path = write(tmp_path / "facts.csv", [{"text": "a b", "entity": "a", "answer": " c"}])
    with pytest.raises(
        DatasetError, match=r"missing column.*'prompt'.*available columns: \['text', 'entity', 'answer'\]"
    ):
        load_dataset(path)
    with pytest.raises(DatasetError, match=r"'rel' \(for relation\)"):
        load_dataset(path, columns={"prompt": "text", "subject": "entity", "target": "answer", "relation": "rel"})
    with pytest.raises(DatasetError, match="keys must be among"):
        load_dataset(path, columns={"question": "text"})
    with pytest.raises(DatasetError, match="split"):
        load_dataset(path, columns={"prompt": "text", "subject": "entity", "target": "answer"}, split="test")


def test_bad_values_and_formats(tmp_path):
    with pytest.raises(DatasetError, match=r"row 1, column 'target' must be text, got None"):
        load_dataset(write(tmp_path / "facts.jsonl", [ROWS[0], {**ROWS[1], "target": None}]))
    with pytest.raises(DatasetError, match="list of objects"):
        load_dataset(write(tmp_path / "facts.json", {"prompt": "x"}))  # type: ignore[arg-type]
    (tmp_path / "facts.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"unsupported file type '\.txt'"):
        load_dataset(tmp_path / "facts.txt")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no dataset file .*counterfact, known_1000"):
        load_dataset(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="dataset file not found"):
        load_dataset("counterfact", path=tmp_path / "nope.parquet")


def test_named_dataset_arguments(tmp_path):
    with pytest.raises(DatasetError, match="columns= applies to files"):
        load_dataset("counterfact", columns={"prompt": "p"})
    with pytest.raises(DatasetError, match="path= applies to named datasets"):
        load_dataset(tmp_path / "x.csv", path=tmp_path / "y.csv")


def test_register_dataset(monkeypatch):
    monkeypatch.setattr("infoflow.data.datasets.DATASETS", dict(DATASETS))

    def load_tiny(*, path: Path | None = None, split: str | None = None) -> list[FactPrompt]:
        return [FactPrompt(0, "Paris is", "Paris", " nice", extras={"split": split})]

    register_dataset("tiny", load_tiny)
    assert load_dataset("tiny", split="x")[0].extras == {"split": "x"}
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("tiny", load_tiny)


def test_counterfact_local_file():
    prompts = load_dataset("counterfact", path=needs(COUNTERFACT))
    assert len(prompts) == 21_919
    assert [p.prompt_id for p in prompts[:3]] == [0, 1, 2]
    first = prompts[0]
    assert (first.prompt, first.subject, first.target) == (
        "The mother tongue of Danielle Darrieux is",
        " Danielle Darrieux",
        " French",
    )
    assert first.relation == "The mother tongue of {} is"
    assert first.extras["target_false"] == " English" and first.extras["relation_id"] == "P103"
    assert prompts[90].prompt == "The twin city of Rabat is"
    assert all(p.target.startswith(" ") for p in prompts)


def test_counterfact_hub_offline_says_how_to_pass_a_file(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'NeelNanda/counterfact-tracing' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetUnavailableError, match=r"Couldn't reach.*path='counterfact.parquet'"):
        load_dataset("counterfact")


def test_counterfact_hub_rows(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = [{"prompt": "Toko Yasuda, the", "subject": "Toko Yasuda", "target_true": " guitar", "relation": "{}, the"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(rows))
    [prompt] = load_dataset("counterfact")
    assert (prompt.prompt_id, prompt.target, prompt.relation) == (0, " guitar", "{}, the")


def test_reference_ids_match_the_reference_spec():
    assert reference_order()[:5] == (13592, 17956, 10594, 15490, 90)
    assert reference_counterfact_index(90) == int(np.random.default_rng(42).permutation(21_919)[90])
    with pytest.raises(IndexError):
        reference_counterfact_index(21_919)
    prompts = load_dataset("counterfact", path=needs(COUNTERFACT))
    assert prompts[reference_counterfact_index(90)].prompt == "Abbey of Echternach is located in"

    renumbered = with_reference_ids(prompts)
    assert [p.prompt_id for p in renumbered[:5]] == [13592, 17956, 10594, 15490, 90]
    assert renumbered[4].prompt == "Abbey of Echternach is located in"
    assert renumbered[4].extras["reference_split"] == "train1"
    assert renumbered[4].extras["raw_row"] == reference_counterfact_index(90)
    splits = [p.extras["reference_split"] for p in renumbered]
    assert [splits.count(s) for s in ("train1", "train2", "train3", "train4", "train5", "test")] == [2191] * 5 + [10964]
    assert sorted(p.prompt_id for p in renumbered) == list(range(21_919))
    for wrong in (prompts[:100], prompts[::-1]):
        with pytest.raises(DatasetError, match="needs all 21919 CounterFact prompts"):
            with_reference_ids(wrong)

    train1 = load_counterfact(path=COUNTERFACT, split="train1")
    assert len(train1) == 2191 and train1[4].prompt == "Abbey of Echternach is located in"
    assert len(load_counterfact(path=COUNTERFACT, split="test")) == 10964
    with pytest.raises(DatasetError, match="unknown CounterFact split"):
        load_counterfact(path=COUNTERFACT, split="validation")


def test_reference_permutation_is_hf_shuffle():
    datasets = pytest.importorskip("datasets")
    shuffled = datasets.Dataset.from_dict({"row": list(range(21_919))}).shuffle(seed=42)["row"]
    assert [reference_counterfact_index(i) for i in range(21_919)] == list(shuffled)


def test_known_1000_local_file():
    prompts = load_dataset("known_1000", path=needs(KNOWN_1000))
    assert len(prompts) == 1209
    assert all(p.prompt_id == p.extras["known_id"] for p in prompts)
    first = prompts[0]
    assert (first.prompt, first.subject, first.target) == (
        "Vinson Massif is located in the continent of",
        "Vinson Massif",
        " Antarctica",
    )
    assert first.extras["attribute"] == "Antarctica" and first.relation == "{} is located in the continent"
    assert all(p.target == " " + p.extras["attribute"] for p in prompts)
    with pytest.raises(DatasetError, match="no splits"):
        load_dataset("known_1000", path=KNOWN_1000, split="train")


def test_known_1000_offline_says_how_to_pass_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("INFOFLOW_CACHE", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(known_1000_module.urllib.request, "urlopen", offline)
    with pytest.raises(DatasetUnavailableError, match=r"rome\.baulab\.info.*path='known_1000.json'"):
        load_dataset("known_1000")


def test_known_1000_download_is_cached(tmp_path, monkeypatch):
    row = {"known_id": 0, "prompt": "Paris is in", "subject": "Paris", "attribute": "France", "template": "{} is in"}
    source = write(tmp_path / "served.json", [row])
    monkeypatch.setenv("INFOFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(known_1000_module, "URL", source.as_uri())
    [prompt] = load_dataset("known_1000")
    assert prompt.target == " France"
    assert (tmp_path / "cache" / "known_1000.json").is_file()
    source.unlink()  # the cached copy is used from now on
    assert load_dataset("known_1000") == [prompt]


@pytest.mark.parametrize(
    ("prompt", "text", "expected"),
    [
        ("The capital of France is", "Paris", " Paris"),
        ("The capital of France is", " Paris", " Paris"),
        ("Q: capital of France?\nA:\n", "Paris", "Paris"),
        ("The capital is ", "Paris", "Paris"),
        ("", "Paris", "Paris"),
        ("x", "", ""),
    ],
)
def test_as_continuation(prompt, text, expected):
    assert as_continuation(prompt, text) == expected
