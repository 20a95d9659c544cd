"""A run killed with SIGKILL mid-epoch and resumed with --ckpt_path=last ends exactly like an uninterrupted one."""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
pytestmark = pytest.mark.integration


def _fit(root, *extra):
    env = os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(TESTS)}
    return subprocess.run(
        [sys.executable, "-m", "lit_dpo.fit", *extra, f"--trainer.default_root_dir={root}"],
        env=env,
        capture_output=True,
        text=True,
    )


def _metrics(root):
    with open(root / "lightning_logs" / "version_0" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    train = {int(r["step"]): float(r["train/loss"]) for r in rows if r["train/loss"]}
    return train, [r for r in rows if r["val/loss"]][-1]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_model_dir, tmp_path, standard_rows, write_jsonl):
    train, val = (
        write_jsonl(tmp_path / "t.jsonl", standard_rows(64)),
        write_jsonl(tmp_path / "v.jsonl", standard_rows(8, 5)),
    )
    common = [f"--model.model_name_or_path={tiny_model_dir}", f"--data.path={train}", f"--data.val_path={val}"]
    common += ["--trainer.max_steps=10", "--trainer.enable_progress_bar=false", "--model.learning_rate=1e-3"]
    common += ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint"]
    common += ["--trainer.callbacks.every_n_train_steps=2", "--trainer.callbacks.save_last=true"]
    assert _fit(tmp_path / "straight", *common).returncode == 0
    killed = _fit(
        tmp_path / "killed", *common, "--trainer.callbacks+=killer.KillAfterStep", "--trainer.callbacks.step=5"
    )
    assert killed.returncode == -signal.SIGKILL  # died mid-epoch (16 steps an epoch), one step after a checkpoint
    resumed = _fit(tmp_path / "killed", *common, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (train_a, val_a), (train_b, val_b) = _metrics(tmp_path / "straight"), _metrics(tmp_path / "killed")
    assert sorted(train_b) == list(range(10))  # every step logged, in the same run directory
    for step in range(10):
        assert train_b[step] == pytest.approx(train_a[step], rel=1e-4), step  # the same batches in the same order
    assert val_b["step"] == val_a["step"]
    for key in (k for k in val_a if k.startswith("val/")):
        assert float(val_b[key]) == pytest.approx(float(val_a[key]), rel=1e-4), key


@pytest.mark.parametrize("strategy", ["fsdp"])  # DDP: test_checkpoints' SIGTERM test resumes 2 DDP ranks exactly
def test_resume_on_two_ranks_continues_exactly(strategy, tiny_model_dir, tmp_path, standard_rows, write_jsonl):
    """Stopped after 4 steps (mid-epoch 2 of 3-step epochs) and resumed with --ckpt_path=last: as if never stopped."""
    train, val = (
        write_jsonl(tmp_path / "t.jsonl", standard_rows(24)),
        write_jsonl(tmp_path / "v.jsonl", standard_rows(7, 5)),
    )
    recipes = TESTS.parent / "recipes"
    common = ["--config", str(recipes / "base.yaml"), "--config", str(recipes / "strategy" / f"{strategy}.yaml")]
    common += ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.max_epochs=3"]
    common += [f"--model.model_name_or_path={tiny_model_dir}", f"--data.path={train}", f"--data.val_path={val}"]
    common += ["--trainer.enable_progress_bar=false", "--model.learning_rate=1e-3"]
    common += ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint"]
    common += ["--trainer.callbacks.every_n_train_steps=2", "--trainer.callbacks.save_last=true"]
    assert _fit(tmp_path / "straight", *common, "--trainer.max_steps=6").returncode == 0
    assert _fit(tmp_path / "stopped", *common, "--trainer.max_steps=4").returncode == 0
    resumed = _fit(tmp_path / "stopped", *common, "--trainer.max_steps=6", "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (train_a, val_a), (train_b, val_b) = _metrics(tmp_path / "straight"), _metrics(tmp_path / "stopped")
    assert sorted(train_b) == list(range(6))
    for step in range(6):
        assert train_b[step] == pytest.approx(train_a[step], rel=1e-4), step
    for key in (k for k in val_a if k.startswith("val/")):
        assert float(val_b[key]) == pytest.approx(float(val_a[key]), rel=1e-4), key
