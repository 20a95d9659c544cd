"""lit_dpo/callbacks/progress.py: what the terminal shows, tried as a user runs it."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from lit_dpo.callbacks import DPOProgressBar


def test_the_progress_bar_shows_what_a_dpo_user_watches():
    metrics = {"train/loss": 0.693147, "train/rewards/margins": 0.0123456, "val/rewards/accuracies": 1.0, "v_num": 0}
    trainer = SimpleNamespace(callback_metrics={k: torch.tensor(v) for k, v in metrics.items()})
    assert DPOProgressBar().get_metrics(trainer, None) == {"loss": "0.6931", "margin": "0.01235", "val_acc": "1"}


@pytest.mark.integration
def test_the_terminal_is_free_of_known_third_party_noise(tiny_model_dir, tmp_path, standard_rows, write_jsonl):
    data = write_jsonl(tmp_path / "t.jsonl", standard_rows(16))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"} | {"COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "lit_dpo.fit", f"--model.model_name_or_path={tiny_model_dir}",
                           f"--data.path={data}", f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=2"],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    shown = done.stdout + done.stderr
    for noise in ("💡 Tip", "litlogger", "litmodels", "Total FLOPs", "v_num", "set_vital", "LeafSpec",
                  "weights_only` was not set", "Trainer already configured"):  # fmt: skip
        assert noise not in shown, noise
    assert "margin" in shown and "loss" in shown and "lit_dpo: report" in shown
