"""A full disk (a real file size limit, RLIMIT_FSIZE) loses no data and hangs nothing: a checkpoint or export that
cannot be written stops every rank within seconds with one line, and leaves no half-written file."""

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def files(tmp_path_factory, standard_rows, write_jsonl):
    root = tmp_path_factory.mktemp("pairs")
    return write_jsonl(root / "train.jsonl", standard_rows(16)), write_jsonl(root / "val.jsonl", standard_rows(4, 5))


def _fit_with_file_limit(limit_bytes, ranks, tiny_model_dir, files, root, *extra):
    args = ["--config", str(RECIPES / "base.yaml"), f"--model.model_name_or_path={tiny_model_dir}",
            f"--data.path={files[0]}", f"--data.val_path={files[1]}", f"--trainer.default_root_dir={root}",
            "--trainer.max_steps=2", "--trainer.enable_progress_bar=false", "--generations.num_prompts=0", *extra]  # fmt: skip
    if ranks == 2:
        args += ["--config", str(RECIPES / "strategy" / "ddp.yaml"), "--trainer.accelerator=cpu", "--trainer.devices=2"]
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))  # noqa: E731
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "lit_dpo.fit", *args], capture_output=True, text=True, timeout=600,
                          env=os.environ | {"PYTHONWARNINGS": "ignore"}, preexec_fn=limit)  # fmt: skip
    return done, time.monotonic() - start


@pytest.mark.parametrize("ranks", [1, 2], ids=["one_process", "ddp_2_ranks"])
def test_a_checkpoint_that_does_not_fit_stops_every_rank_with_one_line(ranks, tiny_model_dir, files, tmp_path):
    done, seconds = _fit_with_file_limit(1_000_000, ranks, tiny_model_dir, files, tmp_path)  # the checkpoint: ~1.4 MB
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("lit_dpo: error:")]
    assert errors and len(set(errors)) == 1 and len(errors) == ranks, done.stderr[-3000:]  # every rank, one line
    assert errors[0].startswith("lit_dpo: error: could not save the checkpoint ")
    assert errors[0].endswith("; the previous checkpoint is kept, free some space and resume from it")
    assert "Traceback" not in done.stderr and seconds < 120
    assert not list(tmp_path.rglob("*.partial")) and not list(tmp_path.rglob("last.ckpt"))  # nothing half-written


@pytest.mark.parametrize("ranks", [1, 2], ids=["one_process", "ddp_2_ranks"])
def test_an_export_that_does_not_fit_is_one_line_on_every_rank(ranks, tiny_model_dir, files, tmp_path):
    done, seconds = _fit_with_file_limit(
        300_000, ranks, tiny_model_dir, files, tmp_path, "--trainer.enable_checkpointing=false"
    )  # the weights: ~450 KB
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("lit_dpo: error:")]
    assert len(errors) == ranks and len(set(errors)) == 1, done.stderr[-3000:]
    assert errors[0].startswith("lit_dpo: error: could not write the trained policy to ")
    assert "Traceback" not in done.stderr and seconds < 120
    assert not list(tmp_path.rglob("hf_model*"))  # no export, no half of one
