"""lit_dpo/data/rows.py: every file format, and every bad row named by file, row and field."""

import json

import pytest

from lit_dpo.data import PairRow, read_rows
from lit_dpo.errors import DataError


def test_reads_every_format(tmp_path, standard_rows, write_jsonl):
    import datasets

    rows = standard_rows(5)
    jsonl = write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    datasets.Dataset.from_list(rows).to_csv(str(tmp_path / "d.csv"), index=False)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    for path in (jsonl, tmp_path / "d.json", tmp_path / "d.parquet", tmp_path / "d.csv", tmp_path / "saved"):
        got = read_rows(str(path))
        assert [{k: getattr(r, k) for k in ("prompt", "chosen", "rejected")} for r in got] == rows, path
        assert all(isinstance(r, PairRow) for r in got)


def test_reads_a_folder_of_data_files_by_split(tmp_path, standard_rows, write_jsonl):
    folder = tmp_path / "pairs"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", standard_rows(3))
    write_jsonl(folder / "test.jsonl", standard_rows(2, seed=1))
    assert len(read_rows(str(folder))) == 3
    assert [r.prompt for r in read_rows(str(folder), split="test")] == [r["prompt"] for r in standard_rows(2, seed=1)]


def test_row_numbers_are_line_numbers(tmp_path, standard_rows):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(standard_rows(1)[0]) + "\n\n" + json.dumps(standard_rows(1)[0]) + "\n")
    assert [r.row for r in read_rows(str(path))] == [1, 3]


def test_conversational_and_implicit_prompt(tmp_path, chat_rows, write_jsonl):
    rows = chat_rows(2)
    implicit = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in rows]
    got = read_rows(write_jsonl(tmp_path / "d.jsonl", implicit))
    assert [(g.prompt, g.chosen, g.rejected) for g in got] == [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]


GOOD = {"prompt": "p", "chosen": "c", "rejected": "r"}
MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"prompt": "p", "chosen": ', r"row 2: invalid JSON"),
        (json.dumps({"prompt": "p", "chosen": "c"}), r"row 2, field 'rejected': missing"),
        (json.dumps(GOOD | {"chosen": None}), r"row 2, field 'chosen': is null"),
        (
            json.dumps(GOOD | {"rejected": 3}),
            r"row 2, field 'rejected': expected a string or a list of messages, got int",
        ),
        (
            json.dumps(GOOD | {"prompt": [{"role": "user"}]}),
            r"row 2, field 'prompt': each message needs a string 'content'",
        ),
        (json.dumps(GOOD | {"prompt": MSG}), r"row 2: mixes strings and message lists"),
        (json.dumps([1, 2]), r"row 2: expected an object"),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path, line, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    with pytest.raises(DataError, match=f"^{path}, {expected}"):
        read_rows(str(path))


def test_missing_empty_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        read_rows(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl: no rows found"):
        read_rows(str(tmp_path / "empty.jsonl"))
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        read_rows(str(tmp_path / "d.txt"))


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,chosen\n"p","c"\n')
    with pytest.raises(DataError, match=r"d.csv, row 2, field 'rejected': missing"):
        read_rows(str(path))
