"""lit_dpo/callbacks/lock.py: one fit at a time writes into a run directory; a lock its process left is taken over."""

import json
import os
import socket
import subprocess
import sys

import pytest

from lit_dpo import fit
from lit_dpo.callbacks.lock import LOCK, acquire
from lit_dpo.errors import InputError


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)  # that process has exited


def test_a_live_lock_is_refused_and_a_stale_one_taken_over(tmp_path):
    path = tmp_path / LOCK
    acquire(path)
    with pytest.raises(InputError, match=rf"{tmp_path} is in use by another fit \(pid {os.getpid()} on "):
        acquire(path)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "since": "yesterday"}))
    acquire(path)  # that fit is gone: its lock is stale
    assert json.loads(path.read_text())["pid"] == os.getpid()
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "since": "now"}))
    with pytest.raises(InputError, match="pid 1 on another-node"):  # its process cannot be checked from here
        acquire(path)


def test_a_second_fit_into_a_run_in_use_stops_with_one_line(
    tiny_model_dir, tmp_path, standard_rows, write_jsonl, capsys, fit_args
):
    files = write_jsonl(tmp_path / "t.jsonl", standard_rows(8)), write_jsonl(tmp_path / "v.jsonl", standard_rows(4, 1))
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--trainer.max_steps=1"))
    run = tmp_path / "lightning_logs" / "version_0"
    assert not (run / LOCK).exists()  # released at the end
    (run / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": "now"}))
    with pytest.raises(SystemExit) as exit_info:  # job B resuming job A's run while A still writes there
        fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--trainer.max_steps=2", "--ckpt_path=last"))
    assert exit_info.value.code == 2
    assert f"lit_dpo: error: {run} is in use by another fit (pid {os.getpid()}" in capsys.readouterr().err
