"""lit_dpo/data/files.py: records from every file type, folder and data set form, read as users have them."""

import json

import pytest

from lit_dpo.data import PairRow, read_rows
from lit_dpo.errors import DataError

GOOD = {"prompt": "p", "chosen": "c", "rejected": "r"}


def test_reads_every_format(tmp_path, standard_rows, write_jsonl):
    import datasets

    rows = standard_rows(5)
    jsonl = write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    datasets.Dataset.from_list(rows).to_csv(str(tmp_path / "d.csv"), index=False)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    for path in (jsonl, tmp_path / "d.json", tmp_path / "d.parquet", tmp_path / "d.csv", tmp_path / "saved"):
        got = read_rows(str(path)).rows
        assert [{k: getattr(r, k) for k in ("prompt", "chosen", "rejected")} for r in got] == rows, path
        assert all(isinstance(r, PairRow) for r in got)


def test_reads_a_folder_of_data_files_by_split(tmp_path, standard_rows, write_jsonl):
    folder = tmp_path / "pairs"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", standard_rows(3))
    write_jsonl(folder / "test.jsonl", standard_rows(2, seed=1))
    assert len(read_rows(str(folder)).rows) == 3
    assert [r.prompt for r in read_rows(str(folder), split="test").rows] == [
        r["prompt"] for r in standard_rows(2, seed=1)
    ]


def test_row_numbers_are_line_numbers(tmp_path, standard_rows):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(standard_rows(1)[0]) + "\n\n" + json.dumps(standard_rows(1)[0]) + "\n")
    assert [r.row for r in read_rows(str(path)).rows] == [1, 3]


def test_missing_empty_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        read_rows(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl: no rows found"):
        read_rows(str(tmp_path / "empty.jsonl"))
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        read_rows(str(tmp_path / "d.txt"))


def test_unicode_line_separators_inside_strings_are_text(tmp_path):
    path = tmp_path / "seps.jsonl"
    text = "line\u2028break\u0085next\u2029para"
    path.write_text(json.dumps(GOOD | {"chosen": text}, ensure_ascii=False) + "\n" + json.dumps(GOOD) + "\n")
    got = read_rows(str(path)).rows
    assert [r.row for r in got] == [1, 2] and got[0].chosen == text


def test_csv_with_a_bom_and_a_huge_field_loads(tmp_path):
    path = tmp_path / "bom.csv"
    long = "word " * 60_000  # 300 KB: over the csv module's default field size limit
    path.write_text("\ufeffprompt,chosen,rejected\np," + long + ",r\n", encoding="utf-8")
    (row,) = read_rows(str(path)).rows
    assert row.prompt == "p" and row.chosen == long


def test_corrupt_parquet_is_one_line(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(DataError, match=r"broken.parquet: not a readable Parquet file"):
        read_rows(str(path))


@pytest.mark.parametrize("path", ["./missing", "~/missing_lit_dpo_data", "/no/such/dir", "train.parquet"])
def test_a_missing_local_path_is_never_looked_up_on_the_hub(path, monkeypatch, tmp_path):
    import datasets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("looked up on the Hub"))
    with pytest.raises(DataError, match=r"(file not found|no such file or folder)$"):
        read_rows(path)


def test_a_saved_dataset_without_the_split_lists_its_splits(tmp_path, standard_rows):
    import datasets

    rows = datasets.Dataset.from_list(standard_rows(3))
    datasets.DatasetDict({"train_prefs": rows, "test_prefs": rows}).save_to_disk(str(tmp_path / "uf"))
    with pytest.raises(DataError, match=r"uf: has no split 'train'; its splits: train_prefs, test_prefs"):
        read_rows(str(tmp_path / "uf"))
    assert len(read_rows(str(tmp_path / "uf"), split="test_prefs").rows) == 3


def test_a_data_set_configuration_is_read_by_name(tmp_path, standard_rows, write_jsonl):
    """A folder whose dataset card declares configurations, as Hub data sets do (load_dataset(path, name))."""
    folder = tmp_path / "multi"
    for config, seed in (("en", 0), ("fr", 1)):
        (folder / config).mkdir(parents=True)
        write_jsonl(folder / config / "train.jsonl", standard_rows(3, seed))
    card = "---\nconfigs:\n" + "".join(
        f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train.jsonl\n" for c in ("en", "fr")
    )
    (folder / "README.md").write_text(card + "---\n")
    got = read_rows(str(folder), "train", config_name="fr").rows
    assert [r.prompt for r in got] == [r["prompt"] for r in standard_rows(3, 1)]
