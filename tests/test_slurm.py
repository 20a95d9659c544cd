"""SLURM's SIGUSR1 (``#SBATCH --signal=SIGUSR1@90``) handled like SIGTERM: a flag, the ranks agree at the step's
end, save, then ``scontrol requeue`` (a stand-in on PATH here) and exit; the requeued job (the same command, the
same job id) resumes and ends with the uninterrupted run's losses."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
TESTS = Path(__file__).resolve().parent
RECIPES = TESTS.parent / "recipes"
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "lit_dpo", "SLURM_NODELIST": "localhost",
         "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}  # fmt: skip


# Stand-ins for SLURM's srun and scontrol, first on PATH, so that recipes/slurm/dpo.sbatch runs as on a cluster:
# srun starts one local process per task with the SLURM_* variables Lightning reads (task i as node i),
# --kill-on-bad-exit included; scontrol records its arguments (scontrol requeue <job id>).
SRUN = """#!/usr/bin/env bash
# srun [--kill-on-bad-exit=1] COMMAND...: SLURM_NTASKS local processes, task i as node i
kill_on_bad_exit=0
while [[ "$1" == --* ]]; do [[ "$1" == --kill-on-bad-exit* ]] && kill_on_bad_exit=1; shift; done
pids=()
for ((task = 0; task < SLURM_NTASKS; task++)); do
    SLURM_PROCID=$task SLURM_LOCALID=0 SLURM_NODEID=$task "$@" &
    pids+=($!)
done
status=0
while ((${#pids[@]})); do
    wait -n -p done_pid "${pids[@]}"; code=$?
    pids=(${pids[@]/$done_pid})
    if ((code != 0 && status == 0)); then
        status=$code  # the first failure's status, as srun reports it
        ((kill_on_bad_exit)) && kill "${pids[@]}" 2>/dev/null
    fi
done
exit $status
"""


def _install_standins(folder: Path, calls: Path) -> Path:
    """Write ``srun`` and ``scontrol`` into ``folder``; ``scontrol`` appends its arguments to ``calls``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "srun").write_text(SRUN)
    (folder / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    for name in ("srun", "scontrol"):
        (folder / name).chmod(0o755)
    return folder


def _free_port() -> int:
    """A TCP port free on localhost now, for a rendezvous."""
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _pair_files(tmp_path: Path, standard_rows, write_jsonl) -> tuple[str, str]:
    return write_jsonl(tmp_path / "t.jsonl", standard_rows(16)), write_jsonl(tmp_path / "v.jsonl", standard_rows(4, 3))


def _train_losses(root: Path) -> dict[int, float]:
    (metrics,) = root.glob("lightning_logs/version_*/metrics.csv")
    with open(metrics) as handle:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(handle) if r["train/loss"]}


def test_sigusr1_saves_requeues_and_the_requeued_job_resumes_exactly(
    tiny_model_dir, tmp_path, standard_rows, write_jsonl
):
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls.txt"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = os.environ | SLURM | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONWARNINGS": "ignore",
                                "PYTHONPATH": str(TESTS)}  # fmt: skip
    train, val = _pair_files(tmp_path, standard_rows, write_jsonl)

    def job(root: Path, *extra: str) -> subprocess.CompletedProcess:
        args = ["--config", str(RECIPES / "base.yaml"), "--config", str(RECIPES / "slurm" / "multinode.yaml"),
                "--trainer.num_nodes=1", "--trainer.devices=1", "--trainer.accelerator=cpu", "--trainer.precision=32-true",
                f"--model.model_name_or_path={tiny_model_dir}", f"--data.path={train}", f"--data.val_path={val}",
                "--trainer.max_epochs=2", "--model.learning_rate=1e-3", "--generations.num_prompts=0",
                f"--trainer.default_root_dir={root}", "--ckpt_path=auto", "--trainer.enable_progress_bar=false", *extra]  # fmt: skip
        return subprocess.run([sys.executable, "-m", "lit_dpo.fit", *args], env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip

    straight = job(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    root = tmp_path / "runs" / "slurm-4242"
    preempted = job(root, "--trainer.callbacks+=killer.UsrAtStep", "--trainer.callbacks.step=2")
    assert preempted.returncode == 143, preempted.stderr[-3000:]
    (checkpoint,) = root.glob("lightning_logs/version_0/checkpoints/last.ckpt")
    assert preempted.stderr.strip().splitlines()[-1] == (
        f"lit_dpo: stopped by SIGUSR1 at step 3; checkpoint {checkpoint}; requeued SLURM job 4242, which resumes "
        "with --ckpt_path=auto"
    )
    assert calls.read_text() == "requeue 4242\n" and not list(root.rglob("hpc_ckpt_*"))  # no save in the handler
    requeued = job(root, "--trainer.callbacks+=killer.UsrAtStep", "--trainer.callbacks.step=2")  # the same command
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert f"lit_dpo: resuming {checkpoint} at step 3" in requeued.stdout
    resumed, expected = _train_losses(root), _train_losses(tmp_path / "straight")
    assert sorted(resumed) == sorted(expected)
    assert all(resumed[step] == pytest.approx(expected[step], rel=1e-4) for step in expected)


def _torchrun_line() -> list[str]:
    """The torchrun command in recipes/slurm/dpo.sbatch's header, continuation lines joined."""
    lines = (RECIPES / "slurm" / "dpo.sbatch").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("# ").startswith("torchrun --"))
    command = ""
    for line in lines[start:]:
        command += " " + line.lstrip("#").strip().rstrip("\\")
        if not line.rstrip().endswith("\\"):
            break
    return command.split()


def test_the_torchrun_line_of_the_sbatch_script_runs_the_same_job_on_two_nodes(
    tiny_model_dir, tmp_path, standard_rows, write_jsonl
):
    """The script's torchrun line, on 2 "nodes" of 1 CPU process each (c10d rendezvous on localhost): FSDP in bf16
    as the sbatch job, with the losses of the same configs on one node of 2 processes."""
    train, val = _pair_files(tmp_path, standard_rows, write_jsonl)
    port = _free_port()
    substitutions = {"--nproc-per-node=8": "--nproc-per-node=1", "--trainer.devices=8": "--trainer.devices=1",
                     "--rdzv-endpoint=$HEAD_NODE:29500": f"--rdzv-endpoint=localhost:{port}"}  # fmt: skip
    command = [substitutions.get(word, word) for word in _torchrun_line()]
    assert command[0] == "torchrun" and "--nnodes=2" in command and "recipes/precision/bf16-mixed.yaml" in command
    command = [str(TESTS.parent / w) if w.startswith("recipes/") else w for w in command]
    ours = [f"--model.model_name_or_path={tiny_model_dir}", f"--data.path={train}", f"--data.val_path={val}",
            "--trainer.accelerator=cpu", "--trainer.max_steps=3", "--trainer.max_epochs=2", "--generations.num_prompts=0",
            "--trainer.enable_progress_bar=false"]  # fmt: skip
    env = os.environ | {
        "PYTHONWARNINGS": "ignore",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    nodes = [subprocess.Popen([*command, *ours, f"--trainer.default_root_dir={tmp_path / 'torchrun'}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    config = (tmp_path / "torchrun" / "lightning_logs" / "version_0" / "config.yaml").read_text()
    assert "precision: bf16-mixed" in config and "lit_dpo.parallel.FSDPStrategy" in config and "num_nodes: 2" in config
    configs = [w for w in command if w.endswith(".yaml")]
    one_node = subprocess.run([sys.executable, "-m", "lit_dpo.fit", *(f"--config={c}" for c in configs), *ours,
                               "--trainer.devices=2", f"--trainer.default_root_dir={tmp_path / 'one_node'}"],
                              env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one_node.returncode == 0, one_node.stderr[-3000:]
    two_nodes, expected = _train_losses(tmp_path / "torchrun"), _train_losses(tmp_path / "one_node")
    assert sorted(two_nodes) == [0, 1, 2] and all(
        two_nodes[s] == pytest.approx(expected[s], rel=1e-3) for s in expected
    )


def test_hsdp_replicates_across_nodes_and_shards_within_them(tiny_model_dir, tmp_path, standard_rows, write_jsonl):
    """recipes/strategy/hsdp.yaml on 2 nodes of 1 CPU process (torchrun, c10d on localhost): the weights are laid
    out on a (nodes, processes per node) mesh, replicated over nodes, and training gives FSDP's losses."""
    train, val = _pair_files(tmp_path, standard_rows, write_jsonl)
    port = _free_port()
    common = ["--config", str(RECIPES / "base.yaml"), f"--model.model_name_or_path={tiny_model_dir}",
              f"--data.path={train}", f"--data.val_path={val}", "--trainer.accelerator=cpu", "--trainer.max_steps=3",
              "--trainer.max_epochs=2", "--generations.num_prompts=0", "--trainer.enable_progress_bar=false"]  # fmt: skip
    env = os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(TESTS),
                        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    layout = tmp_path / "layout.txt"
    hsdp = ["torchrun", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}",
            "-m", "lit_dpo.fit", *common, "--config", str(RECIPES / "strategy" / "hsdp.yaml"), "--trainer.num_nodes=2",
            "--trainer.devices=1", f"--trainer.default_root_dir={tmp_path / 'hsdp'}",
            "--trainer.callbacks+=killer.RecordSharding", f"--trainer.callbacks.path={layout}"]  # fmt: skip
    nodes = [
        subprocess.Popen(hsdp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert layout.read_text().strip() == "(2, 1) ['R', 'S(0)']"  # Replicate over nodes, Shard(0) within one
    fsdp = subprocess.run([sys.executable, "-m", "lit_dpo.fit", *common, "--config", str(RECIPES / "strategy" / "fsdp.yaml"),
                           "--trainer.devices=2", f"--trainer.default_root_dir={tmp_path / 'fsdp'}"],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    hybrid, expected = _train_losses(tmp_path / "hsdp"), _train_losses(tmp_path / "fsdp")
    assert sorted(hybrid) == [0, 1, 2] and all(hybrid[s] == pytest.approx(expected[s], rel=1e-4) for s in expected)


def test_the_sbatch_script_preempted_and_requeued_finishes_like_an_uninterrupted_job(
    tiny_model_dir, tmp_path, standard_rows, write_jsonl
):
    """recipes/slurm/dpo.sbatch itself, under stand-ins for srun and scontrol (2 nodes x 1 task, gloo): SIGUSR1 at
    step 2, then the job run again with the same job id (a requeue) resumes and ends with the uninterrupted job's
    losses."""
    import shutil

    work = tmp_path / "cluster"
    shutil.copytree(RECIPES, work / "recipes")
    calls = tmp_path / "scontrol_calls.txt"
    bin_dir = _install_standins(tmp_path / "bin", calls)
    train, val = _pair_files(tmp_path, standard_rows, write_jsonl)
    user_options = [f"--model.model_name_or_path={tiny_model_dir}", f"--data.path={train}", f"--data.val_path={val}",
                    "--trainer.devices=1", "--trainer.accelerator=cpu", "--trainer.max_epochs=2",
                    "--model.learning_rate=1e-3", "--generations.num_prompts=0", "--trainer.enable_progress_bar=false",
                    "--trainer.callbacks+=killer.UsrAtStep", "--trainer.callbacks.step=2"]  # fmt: skip

    def sbatch(job_id: str, *options: str) -> subprocess.CompletedProcess:
        env = os.environ | {"SLURM_JOB_ID": job_id, "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "lit_dpo",
                            "SLURM_NODELIST": "localhost", "MASTER_PORT": str(20000 + int(job_id) % 10000),
                            "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                            "PYTHONPATH": str(TESTS), "PYTHONWARNINGS": "ignore"}  # fmt: skip
        return subprocess.run(["bash", str(work / "recipes" / "slurm" / "dpo.sbatch"), *options], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip

    straight = sbatch("1001", *user_options[:-2])  # no preemption
    assert straight.returncode == 0, straight.stderr[-3000:]
    preempted = sbatch("1002", *user_options)
    assert preempted.returncode == 143, preempted.stderr[-3000:]
    assert "lit_dpo: stopped by SIGUSR1 at step 3;" in preempted.stderr and calls.read_text() == "requeue 1002\n"
    requeued = sbatch("1002", *user_options)  # SLURM runs the same script again, with the same job id
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert "lit_dpo: resuming" in requeued.stdout and "runs/slurm-1002" in requeued.stdout
    resumed, expected = _train_losses(work / "runs" / "slurm-1002"), _train_losses(work / "runs" / "slurm-1001")
    assert sorted(resumed) == sorted(expected) == [0, 1, 2, 3]
    assert all(resumed[step] == pytest.approx(expected[step], rel=1e-4) for step in expected)
