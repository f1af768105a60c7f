"""curate.llm.data.load_data: every source kind, column mapping, and clear errors on bad input."""
from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from curate.llm.data import load_data, parse_column_map, rename_columns, resolve_column, PROMPT_CANDIDATES
from curate.core.errors import BadInputError

ROWS = [{"question": f"q{i}", "answer": f"a{i} #### {i}", "n": i} for i in range(5)]


def write_jsonl(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl(tmp_path):
    ds = load_data(write_jsonl(tmp_path / "d.jsonl"))
    assert isinstance(ds, datasets.Dataset)
    assert ds.to_list() == ROWS


def test_json_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS))
    assert load_data(path).to_list() == ROWS


def test_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    assert load_data(path).to_list() == ROWS


def test_csv(tmp_path):
    path = tmp_path / "d.csv"
    datasets.Dataset.from_list(ROWS).to_csv(str(path), index=False)
    assert load_data(path)["answer"] == [r["answer"] for r in ROWS]


def test_save_to_disk_dataset(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    assert load_data(tmp_path / "saved").to_list() == ROWS


def test_save_to_disk_dataset_dict_picks_split(tmp_path):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                               "test": datasets.Dataset.from_list(ROWS[:2])})
    dd.save_to_disk(str(tmp_path / "saved"))
    assert len(load_data(tmp_path / "saved", split="test")) == 2
    with pytest.raises(BadInputError, match="split 'dev'.*available splits: train, test"):
        load_data(tmp_path / "saved", split="dev")


def test_folder_of_split_files(gsm8k_dir):
    test = load_data(gsm8k_dir, split="test")
    assert len(test) == 1319 and test.column_names == ["question", "answer"]


def test_column_mapping_renames(tmp_path):
    ds = load_data(write_jsonl(tmp_path / "d.jsonl"), columns={"prompt": "question", "response": "answer"})
    assert ds.column_names == ["prompt", "response", "n"]
    assert ds[0]["prompt"] == "q0" and ds[0]["response"] == "a0 #### 0"


def test_column_mapping_replaces_existing_column_of_that_name():
    ds = datasets.Dataset.from_list([{"prompt": "old", "question": "new"}])
    assert rename_columns(ds, {"prompt": "question"}).to_list() == [{"prompt": "new"}]


def test_limit(tmp_path):
    assert len(load_data(write_jsonl(tmp_path / "d.jsonl"), limit=2)) == 2


def test_resolve_column_guesses_then_honours_explicit():
    ds = datasets.Dataset.from_list([{"instruction": "x", "output": "y"}])
    assert resolve_column(ds, None, PROMPT_CANDIDATES, "prompt") == "instruction"
    with pytest.raises(BadInputError, match="prompt column 'q' not found; available columns: instruction, output"):
        resolve_column(ds, "q", PROMPT_CANDIDATES, "prompt")


def test_parse_column_map():
    assert parse_column_map("prompt=question, response=answer") == {"prompt": "question", "response": "answer"}
    with pytest.raises(BadInputError, match="bad column mapping 'prompt'"):
        parse_column_map("prompt")


# ---- bad input: a clear message that names the bad thing --------------------------------------

def test_missing_column_names_it_and_lists_available(tmp_path):
    with pytest.raises(BadInputError) as err:
        load_data(write_jsonl(tmp_path / "d.jsonl"), columns={"prompt": "instruction"})
    assert str(err.value) == "column 'instruction' not found; available columns: question, answer, n"


def test_unknown_file_type(tmp_path):
    path = tmp_path / "d.xlsx"
    path.write_text("x")
    with pytest.raises(BadInputError, match=r"unknown file type '\.xlsx'.*supported: \.csv, \.json, \.jsonl, \.parquet"):
        load_data(path)


def test_missing_path():
    with pytest.raises(BadInputError, match="dataset path does not exist: ./nope.jsonl"):
        load_data("./nope.jsonl")


def test_unreadable_file_content(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(BadInputError, match="cannot read .*d.parquet"):
        load_data(path)


def test_unreadable_permission(tmp_path, monkeypatch):
    # Root reads through chmod 000, so the permission check itself is what is tested here.
    path = write_jsonl(tmp_path / "d.jsonl")
    monkeypatch.setattr("curate.llm.data.os.access", lambda p, mode: False)
    with pytest.raises(BadInputError, match="cannot read dataset path: .*permission denied"):
        load_data(path)


def test_folder_without_data(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(BadInputError, match="neither a save_to_disk dataset nor holds data files"):
        load_data(tmp_path / "empty_dir")


@pytest.mark.parametrize("content", ["", "\n"])
def test_empty_dataset(tmp_path, content):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(BadInputError, match="empty"):
        load_data(path)


@pytest.mark.parametrize("rows", [[], ["x"]])
def test_empty_saved_dataset(tmp_path, rows):
    # [] is saved with no shards; ["x"] filtered to nothing keeps an empty shard.
    datasets.Dataset.from_dict({"question": rows}).filter(lambda _: False).save_to_disk(str(tmp_path / "s"))
    with pytest.raises(BadInputError, match="dataset is empty"):
        load_data(tmp_path / "s")


def test_hub_id_offline_is_a_clear_error():
    # conftest sets HF_HUB_OFFLINE=1: the hub path runs and fails cleanly instead of hanging.
    with pytest.raises(BadInputError, match="cannot load 'no-such-org/no-such-dataset'"):
        load_data("no-such-org/no-such-dataset")


def test_bad_limit(tmp_path):
    with pytest.raises(BadInputError, match="limit must be a positive integer, got 0"):
        load_data(write_jsonl(tmp_path / "d.jsonl"), limit=0)


def test_a_selection_folder_loads_its_selection(tmp_path):
    # `curate select` writes selected.jsonl beside scored.jsonl (every row): a folder read as a
    # folder of data files would mix the two.
    out = tmp_path / "sel"
    out.mkdir()
    (out / "run.json").write_text("{}")
    (out / "selected.jsonl").write_text('{"question": "a", "row_index": 0}\n')
    (out / "scored.jsonl").write_text('{"question": "a", "row_index": 0}\n{"question": "b", "row_index": 1}\n')
    assert load_data(out)["question"] == ["a"]
