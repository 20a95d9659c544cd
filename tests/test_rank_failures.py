"""A write that fails on rank 0 alone (the reference cache, the export) neither hangs the other ranks nor loses
data silently: 2 CPU processes under DDP."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
TESTS = Path(__file__).resolve().parent
RECIPES = TESTS.parent / "recipes"


def _ddp_fit(tiny_model_dir, files, root, *extra, **env_vars):
    args = ["--config", str(RECIPES / "base.yaml"), "--config", str(RECIPES / "strategy" / "ddp.yaml")]
    args += [
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.max_steps=2",
        "--trainer.enable_progress_bar=false",
    ]
    args += [f"--model.model_name_or_path={tiny_model_dir}", f"--data.path={files[0]}", f"--data.val_path={files[1]}"]
    args += [f"--trainer.default_root_dir={root}", *extra]
    env = os.environ | {"PYTHONWARNINGS": "ignore::DeprecationWarning", "PYTHONPATH": str(TESTS)} | env_vars
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "lit_dpo.fit", *args], env=env, capture_output=True, text=True, timeout=600
    )
    return done, time.monotonic() - start


@pytest.fixture(scope="module")
def files(tmp_path_factory, standard_rows, write_jsonl):
    root = tmp_path_factory.mktemp("pairs")
    return write_jsonl(root / "train.jsonl", standard_rows(16)), write_jsonl(root / "val.jsonl", standard_rows(4, 5))


def test_an_unwritable_reference_cache_finishes_the_fit_on_both_ranks(tiny_model_dir, files, tmp_path):
    (tmp_path / "a_file").write_text("no folder can be made under a file")
    done, _ = _ddp_fit(tiny_model_dir, files, tmp_path, "--model.precompute_ref_log_probs=true",
                       LIT_DPO_CACHE=str(tmp_path / "a_file" / "cache"))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "could not save the reference log-prob cache" in done.stderr and "trained policy" in done.stdout


@pytest.mark.parametrize("fault", ["DiskFullOnRank0", "BlockPath"], ids=["disk_full_on_rank_0", "path_taken"])
def test_a_failed_export_stops_every_rank_at_once_with_one_line(tiny_model_dir, files, tmp_path, fault):
    export = tmp_path / "policy"
    callback = ["--trainer.callbacks+=killer." + fault] + (
        [f"--trainer.callbacks.path={export}"] if fault == "BlockPath" else []
    )
    done, seconds = _ddp_fit(tiny_model_dir, files, tmp_path, f"--export_dir={export}", *callback)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("lit_dpo: error:")]
    assert len(errors) == 2 and len(set(errors)) == 1, done.stderr[-3000:]  # both ranks, the same one line
    expected = {
        "DiskFullOnRank0": f"could not write the trained policy to {export}: [Errno 28] No space left on device",
        "BlockPath": f"--export_dir {export}: {export} is a file; name a folder for the trained policy",
    }[fault]
    assert errors[0] == f"lit_dpo: error: {expected}"
    assert seconds < 60 and "Traceback" not in done.stderr
