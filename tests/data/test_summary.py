"""lit_dpo/data/summary.py and ``python -m lit_dpo.data``: what a run would train on, before any model loads."""

import json

import pytest

from lit_dpo.data.__main__ import main


def test_report_counts_lengths_duplicates_and_marks_the_boundary(
    tmp_path, tiny_model_dir, standard_rows, write_jsonl, capsys
):
    rows = standard_rows(12)
    rows += [rows[0], rows[1] | {"rejected": rows[1]["chosen"]}, rows[2] | {"chosen": " yes it is " + "big " * 40}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    output = tmp_path / "report.json"
    main([f"--data.path={path}", "--data.val_split=0", "--data.max_length=64",
          f"--model.model_name_or_path={tiny_model_dir}", f"--output={output}"])  # fmt: skip
    report = json.loads(output.read_text())
    (source,) = report["sources"]
    assert (source["name"], source["stage"], source["rows"], source["kept"]) == ("pairs", "train", 15, 14)
    assert source["dropped"] == {"identical completions": {"count": 1, "rows": [14]}}
    assert source["truncated"] == {"count": 1, "rows": [15]}
    assert source["tokens"]["chosen"]["max"] > 64 >= source["tokens"]["prompt"]["max"]
    assert report["duplicates"] == {"train": 1, "val": 0, "val_in_train": 0}
    example = report["first_example"]
    assert (example["source"], example["row"]) == ("pairs", 1)
    assert (
        example["prompt"] == rows[0]["prompt"] and example["completions"]["chosen"] == rows[0]["chosen"] + "<|im_end|>"
    )
    shown = " ".join(capsys.readouterr().out.split())  # as one line: Rich wraps to the terminal's width
    for text in ("Rows", "Tokens per row", "Duplicate pairs: 1 in train", "First example (pairs, row 1)"):
        assert text in shown, text


def test_report_stops_on_bad_rows_like_a_fit(tmp_path, tiny_model_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": null, "rejected": "r"}\n')
    with pytest.raises(SystemExit) as exit_info:
        main([f"--data.path={bad}", f"--model.model_name_or_path={tiny_model_dir}"])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("bad.jsonl, row 1, field 'chosen': is null; expected a string or a list of messages")
    )
