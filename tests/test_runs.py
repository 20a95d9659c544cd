"""lit_dpo/runs.py: where a run keeps its files, whatever the logger."""

from types import SimpleNamespace

import pytest
from lightning.pytorch.loggers import CSVLogger

from lit_dpo.runs import run_directory


def test_the_run_directory_of_each_kind_of_logger(tmp_path):
    csv_logger = CSVLogger(tmp_path, name="lightning_logs", version=3)
    assert (
        run_directory(SimpleNamespace(logger=csv_logger, default_root_dir="x"))
        == tmp_path / "lightning_logs" / "version_3"
    )
    assert run_directory(SimpleNamespace(logger=None, default_root_dir=str(tmp_path))) == tmp_path
    wandb_like = SimpleNamespace(save_dir=str(tmp_path), name="project", version="abc123")  # no log_dir
    assert run_directory(SimpleNamespace(logger=wandb_like, default_root_dir="x")) == tmp_path / "project" / "abc123"


def test_a_run_file_that_cannot_be_written_warns_and_training_goes_on(tmp_path):
    from lit_dpo.runs import write_records

    write_records(tmp_path / "online" / "round_0.jsonl", [{"prompt": "p"}])
    assert (tmp_path / "online" / "round_0.jsonl").read_text() == '{"prompt": "p"}\n'
    (tmp_path / "taken").write_text("a file where a folder should be")
    with pytest.warns(UserWarning, match=r"could not write .*round_1.jsonl .*; training goes on without it"):
        write_records(tmp_path / "taken" / "round_1.jsonl", [{"prompt": "p"}])
