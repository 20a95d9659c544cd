"""lit_dpo/atomic.py: a file or a folder is replaced whole, or not at all."""

import pytest

from lit_dpo.atomic import write_atomically


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "export"
    write_atomically(target, lambda partial: (partial.mkdir(), (partial / "a.txt").write_text("1")))
    write_atomically(target, lambda partial: (partial.mkdir(), (partial / "b.txt").write_text("2")))
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no .partial or .old left behind


def test_a_failed_write_leaves_the_previous_content(tmp_path):
    target = tmp_path / "file.txt"
    write_atomically(target, lambda partial: partial.write_text("old"))

    def fail(partial):
        partial.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, fail)
    assert target.read_text() == "old"
