"""The W&B recipe logs the reward metrics with no network (WANDB_MODE=offline)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
pytestmark = pytest.mark.integration


def wandb_records(path: Path):
    """Protobuf records of a .wandb file: a 7-byte header, then 32 KiB blocks of 7-byte-headed (LevelDB-log) chunks."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, payload = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's tail is zero padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        payload = chunk if kind in (1, 2) else payload + chunk  # full or first; middle or last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            yield record


def test_wandb_offline_run_holds_the_margin_history(tiny_model_dir, tmp_path, standard_rows, write_jsonl):
    train, val = (
        write_jsonl(tmp_path / "t.jsonl", standard_rows(16)),
        write_jsonl(tmp_path / "v.jsonl", standard_rows(4)),
    )
    args = ["--config", str(RECIPES / "base.yaml"), "--config", str(RECIPES / "logging" / "wandb.yaml")]
    args += [f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=tiny-run"]
    args += ["--trainer.logger.init_args.project=lit-dpo-test", "--trainer.max_steps=3"]
    args += [f"--model.model_name_or_path={tiny_model_dir}", f"--data.path={train}", f"--data.val_path={val}"]
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "lit_dpo.fit", *args], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    history, config = [], {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "run":
            assert record.run.project == "lit-dpo-test" and record.run.display_name == "tiny-run"
    margins = [row["train/rewards/margins"] for row in history if "train/rewards/margins" in row]
    assert len(margins) == 3 and margins[0] == 0.0  # step 0: policy == reference
    assert any("val/rewards/accuracies" in row for row in history)
    assert config["config"]["model"]["model_name_or_path"] == tiny_model_dir  # the resolved config
    assert "trained policy" in done.stdout
    # report.png whatever the logger: drawn from the metrics the run logged (no metrics.csv under W&B)
    report = next(line.split()[2] for line in done.stdout.splitlines() if line.startswith("lit_dpo: report"))
    assert (tmp_path / report).is_file() and not list(tmp_path.rglob("metrics.csv"))
    keys = {key for row in history for key in row}
    for group in ("train/", "val/", "health/", "perf/"):  # W&B sections, by prefix
        assert any(key.startswith(group) for key in keys), group
    tables = [row for row in history if "val/generations/_type" in row]  # WinRate's generations, one per prompt
    assert tables and tables[-1]["val/generations/_type"] == "table-file" and tables[-1]["val/generations/nrows"] == 4


def _history_and_run_id(run_file):
    history, run_id = [], None
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})  # fmt: skip
        elif kind == "run":
            run_id = record.run.run_id
    return history, run_id


def test_a_resumed_run_continues_the_same_wandb_run(tiny_model_dir, tmp_path, standard_rows, write_jsonl):
    train = write_jsonl(tmp_path / "t.jsonl", standard_rows(32))
    args = ["--config", str(RECIPES / "base.yaml"), "--config", str(RECIPES / "logging" / "wandb.yaml")]
    args += [f"--model.model_name_or_path={tiny_model_dir}", f"--data.path={train}", "--data.val_split=0"]
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    job = tmp_path / "runs" / "slurm-1234"  # as recipes/slurm/dpo.sbatch runs it: a root per job, --ckpt_path=auto
    args += [f"--trainer.default_root_dir={job}", "--ckpt_path=auto"]
    for extra in (["--trainer.max_steps=2"], ["--trainer.max_steps=4"]):  # the second: the requeued job
        done = subprocess.run([sys.executable, "-m", "lit_dpo.fit", *args, *extra], capture_output=True, text=True,
                              env=env, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    assert "lit_dpo: resuming" in done.stdout  # the requeued job found its checkpoint under the job's root
    (checkpoint,) = job.glob("*/*/checkpoints/last.ckpt")  # <root>/<project>/<run id>/checkpoints
    first, second = sorted((job / "wandb").glob("offline-run-*/run-*.wandb"))
    (history, run_id), (resumed, resumed_id) = _history_and_run_id(first), _history_and_run_id(second)
    assert run_id == resumed_id == checkpoint.parent.parent.name  # one W&B run
    steps = [row["trainer/global_step"] for row in history + resumed if "train/loss" in row]
    assert steps == [0, 1, 2, 3]  # the optimizer step, monotonic across the resume


def test_wandb_without_an_api_key_is_one_line(tiny_model_dir, tmp_path, standard_rows, write_jsonl):
    train = write_jsonl(tmp_path / "t.jsonl", standard_rows(8))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"HOME": str(tmp_path),
                                                                               "PYTHONWARNINGS": "ignore"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "lit_dpo.fit", "--config", str(RECIPES / "logging" / "wandb.yaml"),
                           f"--model.model_name_or_path={tiny_model_dir}", f"--data.path={train}",
                           f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=1"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith("lit_dpo: error: W&B: UsageError: No API key configured")
