"""lit_dpo/atomic.py: a file or a folder is replaced whole, or not at all."""

import pytest

from lit_dpo.atomic import MARKER, NotOurs, mark, write_atomically


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "export"
    write_atomically(target, lambda partial: (partial.mkdir(), (partial / "a.txt").write_text("1"), mark(partial)))
    write_atomically(target, lambda partial: (partial.mkdir(), (partial / "b.txt").write_text("2"), mark(partial)))
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "b.txt"]
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


def test_a_folder_lit_dpo_did_not_write_is_never_replaced(tmp_path):
    target = tmp_path / "users"
    target.mkdir()
    (target / "precious.txt").write_text("mine")
    with pytest.raises(NotOurs, match="holds files lit_dpo did not write"):
        write_atomically(target, lambda partial: (partial.mkdir(), (partial / "a.txt").write_text("1")))
    assert [p.name for p in target.iterdir()] == ["precious.txt"]
