"""lit_dpo/data/prepare.py: held-out rows, and the log of what became of every row."""

import pytest

from lit_dpo.data.prepare import Limits, SourceLog, hold_out, row_list
from lit_dpo.errors import DataError


def test_hold_out_is_seeded_and_disjoint():
    rows = list(range(20))
    train, val = hold_out(rows, 0.25, "d.jsonl")
    assert len(val) == 5 and sorted(train + val) == rows and (train, val) == hold_out(rows, 0.25, "d.jsonl")
    with pytest.raises(DataError, match="d.jsonl: 1 rows are too few to hold out val_split=0.5"):
        hold_out([1], 0.5, "d.jsonl")  # every row would be held out


def test_row_list_shows_the_first_rows():
    assert row_list([3]) == "row 3"
    assert row_list([1, 2, 3, 4, 5, 6]) == "rows 1, 2, 3, 4, 5, ..."


def test_one_warning_line_counts_truncated_and_dropped_rows():
    log = SourceLog("d", "d.jsonl", "train", rows=10, truncated=[2, 4])
    log.dropped = {"over a length limit": [7], "empty completion": [9]}
    assert log.kept == 8
    assert log.warning(Limits(64, None, "keep_start")) == (
        "d.jsonl: 2 of 9 pairs truncated and 1 dropped to fit max_length=64, max_prompt_length=None "
        "(truncated: rows 2, 4; over a length limit: row 7); 1 of 10 rows dropped (empty completion: row 9)"
    )
    assert SourceLog("d", "d.jsonl", "train", rows=3).warning(Limits(64, None, "drop")) is None
