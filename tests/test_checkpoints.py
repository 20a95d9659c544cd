"""lit_dpo/checkpoints.py: resumable checkpoints written whole, found on resume, checked, and saved on SIGTERM."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_dpo import fit, validate
from lit_dpo.atomic import put_in_place
from lit_dpo.checkpoints import AtomicCheckpointIO, checkpoint_step, resumable_checkpoint

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def files(tmp_path, standard_rows, write_jsonl):
    return write_jsonl(tmp_path / "train.jsonl", standard_rows(32)), write_jsonl(
        tmp_path / "val.jsonl", standard_rows(4, 9)
    )


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def _train_losses(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv") as handle:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(handle) if r["train/loss"]}


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def dies_halfway(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as a kill would stop it

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert io.load_checkpoint(path)["global_step"] == 1 and checkpoint_step(path) == 1
    io.save_checkpoint({"global_step": 3}, path)  # the next save goes through, leaving nothing behind
    assert checkpoint_step(path) == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_checkpoints_are_streamed_to_disk_not_built_in_memory(tmp_path, monkeypatch):
    targets, real_save = [], torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: targets.append(f) or real_save(obj, f, *a, **k))
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, tmp_path / "x.ckpt")
    (target,) = targets
    assert hasattr(target, "fileno") and target.name.endswith("x.ckpt.partial")  # a file, not an in-memory buffer


def test_an_interrupted_folder_swap_still_resumes(tmp_path):
    """A distributed checkpoint (a folder) replaces the previous one in two renames; killed between them, the
    previous one is found at last.ckpt.old."""
    checkpoints = tmp_path / "run" / "checkpoints"
    for name, step in (("last.ckpt", 4), ("last.ckpt.partial", 6)):
        (checkpoints / name).mkdir(parents=True)
        torch.save({"global_step": step}, checkpoints / name / "meta.pt")
    (checkpoints / "last.ckpt").rename(checkpoints / "last.ckpt.old")  # killed after the first rename
    assert resumable_checkpoint(tmp_path / "run") == checkpoints / "last.ckpt.old"
    (checkpoints / "last.ckpt.old").rename(checkpoints / "last.ckpt")
    put_in_place(checkpoints / "last.ckpt")
    assert checkpoint_step(resumable_checkpoint(tmp_path / "run")) == 6 and not (checkpoints / "last.ckpt.old").exists()


def test_a_default_fit_saves_a_resumable_checkpoint_periodically_and_at_the_end(
    tiny_model_dir, files, tmp_path, monkeypatch, fit_args
):
    fit.main(fit_args(tiny_model_dir, *files, tmp_path / "end", "--trainer.max_steps=3"))
    assert checkpoint_step(tmp_path / "end" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt") == 3
    saved, original = [], AtomicCheckpointIO.save_checkpoint

    def recorded(self, checkpoint, path, *args, **kwargs):
        saved.append(checkpoint["global_step"])
        return original(self, checkpoint, path, *args, **kwargs)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recorded)
    fit.main(fit_args(tiny_model_dir, *files, tmp_path / "steps", "--trainer.max_steps=5", "--checkpoint.every_minutes=0",
                   "--checkpoint.every_n_train_steps=2"))  # fmt: skip
    # by time: any time at all has passed, so every step
    fit.main(
        fit_args(tiny_model_dir, *files, tmp_path / "time", "--trainer.max_steps=3", "--checkpoint.every_minutes=1e-9")
    )
    assert saved == [2, 4, 5, 1, 2, 3]  # then once at the end; never twice for one step


def test_ckpt_path_last_without_a_checkpoint_changes_nothing(tiny_model_dir, files, tmp_path, capsys, fit_args):
    validate.main(fit_args(tiny_model_dir, *files, tmp_path))  # a run directory without any checkpoint
    before = _tree(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--ckpt_path=last"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"lit_dpo: error: --ckpt_path=last: no run under {tmp_path} has a resumable checkpoint (checkpoints/last.ckpt)"
    )
    assert _tree(tmp_path) == before


def test_ckpt_path_last_resumes_the_newest_run_that_has_a_checkpoint(tiny_model_dir, files, tmp_path, capsys, fit_args):
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--trainer.max_steps=2"))  # version_0, last.ckpt at step 2
    validate.main(fit_args(tiny_model_dir, *files, tmp_path))  # version_1: no checkpoint
    capsys.readouterr()
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--trainer.max_steps=4", "--ckpt_path=last"))
    run = tmp_path / "lightning_logs" / "version_0"
    assert f"lit_dpo: resuming {run / 'checkpoints' / 'last.ckpt'} at step 2" in capsys.readouterr().out
    assert sorted(_train_losses(run)) == [0, 1, 2, 3] and checkpoint_step(run / "checkpoints" / "last.ckpt") == 4
    assert not (tmp_path / "lightning_logs" / "version_2").exists()


def test_ckpt_path_auto_starts_fresh_or_resumes(tiny_model_dir, files, tmp_path, capsys, fit_args):
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--trainer.max_steps=2", "--ckpt_path=auto"))
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--trainer.max_steps=3", "--ckpt_path=auto"))
    assert "resuming" in capsys.readouterr().out
    assert sorted(_train_losses(tmp_path / "lightning_logs" / "version_0")) == [0, 1, 2]


def test_changed_data_or_reference_stops_a_resume(
    tiny_dirs, files, tmp_path, standard_rows, write_jsonl, capsys, fit_args
):
    policy, other = tiny_dirs
    fit.main(fit_args(policy, *files, tmp_path, "--trainer.max_steps=2"))
    write_jsonl(Path(files[0]), standard_rows(32, seed=5))  # another training set under the same name
    before = _tree(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        fit.main(fit_args(policy, *files, tmp_path, "--trainer.max_steps=3", "--ckpt_path=last"))
    assert exit_info.value.code == 2 and _tree(tmp_path) == before  # refused before anything is written
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("lit_dpo: error: the training data (rows, order, tokenizer or length limits) changed since")
    assert line.endswith("pass --allow_changed='[data]' to resume anyway")
    with pytest.raises(SystemExit) as exit_info:  # the data allowed, the reference still checked
        fit.main(fit_args(policy, *files, tmp_path, "--trainer.max_steps=3", "--ckpt_path=last", "--allow_changed=[data]",
                       f"--model.ref_model_name_or_path={other}"))  # fmt: skip
    assert "the reference model's weights changed since" in capsys.readouterr().err.strip().splitlines()[-1]
    fit.main(fit_args(policy, *files, tmp_path, "--trainer.max_steps=3", "--ckpt_path=last", "--allow_changed=[data]"))
    assert sorted(_train_losses(tmp_path / "lightning_logs" / "version_0")) == [0, 1, 2]


def test_a_resume_with_other_settings_is_refused_listing_old_and_new(tiny_model_dir, files, tmp_path, capsys, fit_args):
    """The reproduced case: a run at batch size 2, sigmoid, resumed with batch size 4, ipo and beta 0.5. Refused
    before anything is written, one line naming each change; --allow_changed naming them resumes anyway, and a
    resume never overwrites the run's recorded config.yaml and hparams.yaml (the resumed run's go beside them)."""
    run = tmp_path / "lightning_logs" / "version_0"
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--data.batch_size=2", "--trainer.max_steps=2"))
    recorded = {name: (run / name).read_bytes() for name in ("config.yaml", "hparams.yaml")}
    changed = ["--data.batch_size=4", "--model.loss_type=ipo", "--model.beta=0.5"]
    before = _tree(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        fit.main(fit_args(tiny_model_dir, *files, tmp_path, *changed, "--trainer.max_steps=6", "--ckpt_path=last"))
    assert exit_info.value.code == 2 and _tree(tmp_path) == before
    changes = "model.loss_type 'sigmoid' -> 'ipo', model.beta 0.1 -> 0.5, data.batch_size 2 -> 4"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (  # --ckpt_path=last finds no run of these settings
        f"lit_dpo: error: --ckpt_path=last: no run under {tmp_path} was saved with these settings (the newest, "
        f"{run / 'checkpoints' / 'last.ckpt'}: {changes}); resume with its settings, or pass "
        "--allow_changed='[model.loss_type, model.beta, data.batch_size]' to resume it anyway"
    )
    checkpoint = run / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit):  # the checkpoint named: the same refusal, by the checkpoint's own check
        fit.main(
            fit_args(tiny_model_dir, *files, tmp_path, *changed, "--trainer.max_steps=6", f"--ckpt_path={checkpoint}")
        )
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"lit_dpo: error: {checkpoint} was saved with other settings: {changes}; resuming would not continue the "
        "same job. Resume with the recorded settings, or pass --allow_changed='[model.loss_type, model.beta, "
        "data.batch_size]' to resume anyway"
    )
    assert _tree(tmp_path) == before
    with pytest.raises(SystemExit):  # a name the checkpoint does not record is refused, not ignored
        fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--data.batch_size=2", "--trainer.max_steps=3",
                          "--ckpt_path=last", "--allow_changed=[model.bta]"))  # fmt: skip
    assert "--allow_changed names ['model.bta'], which" in capsys.readouterr().err
    fit.main(
        fit_args(tiny_model_dir, *files, tmp_path, "--data.batch_size=2", "--trainer.max_steps=3", "--ckpt_path=last")
    )
    allowed = "--allow_changed=[model.loss_type, model.beta, data.batch_size]"
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, *changed, "--trainer.max_steps=4", "--ckpt_path=last", allowed))
    assert sorted(_train_losses(run)) == [0, 1, 2, 3]  # raising max_steps alone is free; the rest was allowed
    assert {name: (run / name).read_bytes() for name in recorded} == recorded
    assert (run / "config_resumed_at_step_2.yaml").is_file() and (run / "config_resumed_at_step_3.yaml").is_file()
    assert (run / "hparams_resumed_at_step_3.yaml").is_file()


@pytest.mark.integration
@pytest.mark.parametrize(
    "ranks, streamed", [(1, False), (2, False), (1, True)], ids=["one_process", "ddp_2_ranks", "one_process_streamed"]
)  # streamed on two ranks: tests/data/test_stream.py deals each window to ranks in equal turns
def test_sigterm_saves_a_checkpoint_exits_143_and_resumes_exactly(
    tiny_model_dir, files, tmp_path, ranks, streamed, fit_args
):
    env = os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(TESTS)}
    recipes = TESTS.parent / "recipes"
    configs = ["--config", str(recipes / "base.yaml"), "--config", str(recipes / "strategy" / "ddp.yaml")]
    # 4 steps an epoch either way, SIGTERM in an epoch's last step; Lightning resumes differently with max_steps
    ddp = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.max_steps=6"]
    one = ["--data.batch_size=8"] + (["--trainer.max_steps=8"] if streamed else [])
    # streamed: read in windows of 10 rows, the resume re-reads the window it stopped in
    stream = ["--data.streaming=true", "--data.stream_window=10"] if streamed else []
    term = 1 if streamed else 3  # streamed: mid-epoch, mid-window, with a batch fetched ahead of the one saved

    def run(root, *extra):
        command = [sys.executable, "-m", "lit_dpo.fit", *(configs if ranks == 2 else []), *fit_args(tiny_model_dir, *files,
                   root, "--trainer.max_epochs=2", "--model.learning_rate=1e-3", *(ddp if ranks == 2 else one), *stream,
                   *extra)]  # fmt: skip
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    assert run(tmp_path / "straight").returncode == 0
    stopped = run(tmp_path / "stopped", "--trainer.callbacks+=killer.TermAtStep", f"--trainer.callbacks.step={term}")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    last = tmp_path / "stopped" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"lit_dpo: stopped by SIGTERM at step {term + 1}; checkpoint {last}; continue with --ckpt_path=last"
    )
    assert checkpoint_step(last) == term + 1  # the step in flight finished, and was saved
    resumed = run(tmp_path / "stopped", "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = _train_losses(tmp_path / "straight" / "lightning_logs" / "version_0")
    again = _train_losses(tmp_path / "stopped" / "lightning_logs" / "version_0")
    assert sorted(straight) == sorted(again) == list(range(6 if ranks == 2 else 8))  # resumed across the epoch's end
    for step, loss in straight.items():
        assert again[step] == pytest.approx(loss, rel=1e-5), step


def test_a_distributed_checkpoint_given_to_a_single_process_is_one_line(tmp_path):
    from lit_dpo.errors import InputError

    (tmp_path / "last.ckpt").mkdir()  # an FSDP checkpoint is a folder
    with pytest.raises(InputError, match="is a distributed \\(FSDP\\) checkpoint: load it with the strategy"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "last.ckpt")


def test_two_jobs_sharing_a_root_never_continue_each_others_run(tiny_model_dir, files, tmp_path, capsys, fit_args):
    """Job B (other settings) with --ckpt_path=auto under job A's root starts a run of its own; A's run is left as
    it was, and A resumes its own."""
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--trainer.max_steps=2", "--ckpt_path=auto"))  # job A
    job_a = tmp_path / "lightning_logs" / "version_0"
    before = _tree(job_a)
    fit.main(
        fit_args(tiny_model_dir, *files, tmp_path, "--model.beta=0.3", "--trainer.max_steps=2", "--ckpt_path=auto")
    )
    out = capsys.readouterr().out
    assert f"no run under {tmp_path} was saved with these settings" in out and "starting afresh" in out
    assert (
        _tree(job_a) == before and (tmp_path / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt").is_file()
    )
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--trainer.max_steps=3", "--ckpt_path=auto"))  # A, requeued
    assert f"lit_dpo: resuming {job_a / 'checkpoints' / 'last.ckpt'} at step 2" in capsys.readouterr().out


@pytest.mark.integration
def test_a_failure_in_the_final_validation_keeps_the_training(tiny_model_dir, files, tmp_path, fit_args):
    """The last step ends the epoch and the validation after it fails: the last step is saved before that
    validation, so resuming redoes only the validation and the export."""
    env = os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(TESTS)}
    args = [sys.executable, "-m", "lit_dpo.fit", *fit_args(tiny_model_dir, *files, tmp_path, "--data.batch_size=8")]
    failed = subprocess.run([*args, "--trainer.callbacks+=killer.FailFinalValidation"], env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert failed.returncode != 0 and "the final validation failed" in failed.stderr
    run = tmp_path / "lightning_logs" / "version_0"
    assert checkpoint_step(run / "checkpoints" / "last.ckpt") == 4  # 32 pairs, 8 a step: the whole epoch
    resumed = subprocess.run([*args, "--ckpt_path=last"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 4" in resumed.stdout and (run / "hf_model" / "config.json").is_file()
    assert sorted(_train_losses(run)) == [0, 1, 2, 3]  # no step trained twice
