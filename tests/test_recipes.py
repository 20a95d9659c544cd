"""Every recipe parses; the strategy recipes run for real on 2 CPU processes with a tiny model."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_dpo import fit

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ALL = sorted(p for p in RECIPES.rglob("*.yaml") if p.name != "base.yaml")


def _print_config(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        fit.main([*args, "--print_config"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_the_slurm_script_fails_fast_and_resumes_in_its_own_folder():
    script = (RECIPES / "slurm" / "dpo.sbatch").read_text()
    assert "srun --kill-on-bad-exit=1 " in script  # one rank failing ends the others
    assert 'root="runs/slurm-${SLURM_JOB_ID}"' in script and 'mkdir -p "$root"' in script  # one root folder per job
    assert '--trainer.default_root_dir="$root" --ckpt_path=auto' in script  # a requeued job continues there
    output = next(line for line in script.splitlines() if line.startswith("#SBATCH --output="))
    assert "/" not in output  # its log goes to a folder that exists when SLURM opens it


def test_base_recipe_is_the_default(capsys):
    assert _print_config(capsys, "--config", str(RECIPES / "base.yaml")) == _print_config(capsys)


@pytest.mark.parametrize("recipe", ALL, ids=[str(p.relative_to(RECIPES)) for p in ALL])
def test_recipe_parses_and_documents_its_command(recipe, capsys):
    first_line = recipe.read_text().splitlines()[0]
    assert first_line.startswith("# python -m lit_dpo.fit") and str(recipe.relative_to(RECIPES.parent)) in first_line
    _print_config(capsys, "--config", str(RECIPES / "base.yaml"), "--config", str(recipe))


def _run(module, args, root, **env_vars):
    env = os.environ | {"PYTHONWARNINGS": "ignore"} | env_vars
    args = [*args, f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false"]
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(root / "lightning_logs" / "version_0" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def files(tmp_path_factory, standard_rows, write_jsonl):
    root = tmp_path_factory.mktemp("ddp")
    return write_jsonl(root / "train.jsonl", standard_rows(24)), write_jsonl(root / "val.jsonl", standard_rows(7, 5))


@pytest.mark.integration
def test_ddp_validation_counts_every_pair_once(tiny_dirs, files, tmp_path):
    """2 ranks x half the data report the same val/ metrics as 1 rank x all of it (7 pairs: uneven)."""
    policy, reference = tiny_dirs
    args = [f"--model.model_name_or_path={policy}", f"--model.ref_model_name_or_path={reference}"]
    args += [f"--data.path={files[0]}", f"--data.val_path={files[1]}", "--data.val_batch_size=2"]
    one = _run("lit_dpo.validate", args, tmp_path / "one")[-1]
    ddp = ["--config", str(RECIPES / "strategy" / "ddp.yaml"), "--trainer.accelerator=cpu", "--trainer.devices=2"]
    two = _run("lit_dpo.validate", [*args, *ddp], tmp_path / "two")[-1]
    assert float(one["val/rewards/margins"]) != 0
    for key in one:
        if key.startswith("val/"):
            assert float(two[key]) == pytest.approx(float(one[key]), rel=1e-4, abs=1e-6), (
                key
            )  # float sums differ in order


SYNC = ["--model.ref_sync_steps=1", "--model.ref_sync_alpha=0.5"]
LIVE = ["--model.precompute_ref_log_probs=false"]
EVAL = ["--eval_harness.tasks=[lit_dpo_arithmetic]", "--eval_harness.limit=6"]  # every rank scores, rank 0 reports
RUNS = {  # name: (extra arguments, the run it must equal)
    "ddp": ([*LIVE, *EVAL], None),
    "fsdp": ([*LIVE, *EVAL], "ddp"),
    "fsdp-cached": ([], "ddp"),  # the default for a one-epoch fit; each rank computes half
    "ddp-sync": (SYNC, None),
    "fsdp-sync": (SYNC, "ddp-sync"),  # TR-DPO on sharded reference and policy
    "ddp-lora": (["--model.lora_r=4", *SYNC], None),
    "fsdp-lora": (["--model.lora_r=4", *SYNC], "ddp-lora"),  # adapters merged into a sharded base
}


@pytest.fixture(scope="module")
def strategy_fit(tiny_model_dir, files, tmp_path_factory):
    """``strategy_fit(name)``: the ``RUNS[name]`` fit on 2 CPU processes, run once per module (a test comparing two
    runs makes both, whatever else was selected): its metrics rows, exported weights, cache files, generations and
    root folder."""
    done = {}

    def run(name):
        if name not in done:
            strategy, root = name.split("-")[0], tmp_path_factory.mktemp(name)
            args = ["--config", str(RECIPES / "base.yaml"), "--config", str(RECIPES / "strategy" / f"{strategy}.yaml")]
            args += ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.max_steps=3"]
            args += ["--model.learning_rate=1e-3", f"--model.model_name_or_path={tiny_model_dir}"]
            args += [f"--data.path={files[0]}", f"--data.val_path={files[1]}", *RUNS[name][0]]
            chunks = {"LIT_DPO_CHUNK_ELEMENTS": str(7 * 300)} if strategy == "fsdp" else {}  # vocabulary of 300
            rows = _run("lit_dpo.fit", args, root, LIT_DPO_CACHE=str(root / "cache"), **chunks)
            from transformers import AutoModelForCausalLM

            exported = AutoModelForCausalLM.from_pretrained(root / "lightning_logs" / "version_0" / "hf_model")
            generated = sorted((root / "lightning_logs" / "version_0" / "generations").glob("step_*.jsonl"))
            records = [json.loads(line) for line in generated[-1].read_text().splitlines()]
            cache_files = list((root / "cache").glob("ref_logps/*.safetensors"))
            done[name] = (rows, exported.state_dict(), cache_files, records, root)
        return done[name]

    return run


@pytest.mark.integration
@pytest.mark.parametrize("run", list(RUNS))
def test_strategy_fit_on_two_cpu_processes(run, tiny_model_dir, files, strategy_fit):
    """Both strategies train, validate over both ranks and export a loadable policy; FSDP matches DDP, with
    cached reference log-probs, TR-DPO reference sync and LoRA too. The FSDP runs compute the log-probs in
    chunks of 7 positions (``lit_dpo.scoring.lm_head``), the DDP runs in one piece."""
    rows, state, cache_files, generations, _ = strategy_fit(run)
    assert len(cache_files) == (2 if run.endswith("-cached") else 0)
    # WinRate (on by default): both ranks' generations, gathered in the validation set's order
    prompts = [json.loads(line)["prompt"] for line in Path(files[1]).read_text().splitlines()]
    assert len(generations) == len(prompts) == 7
    assert all(p.strip() in r["prompt"] for p, r in zip(prompts, generations))
    final = [r for r in rows if r["val/loss"]][-1]
    assert sum(1 for r in rows if r["train/loss"]) == 3  # 24 pairs / (2 ranks x 4 pairs): one epoch
    assert all(math.isfinite(float(final[k])) for k in final if k.startswith("val/"))
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    q_proj = "model.layers.0.self_attn.q_proj.weight"  # trained in full and by LoRA (merged) alike
    assert not torch.equal(state[q_proj], start.state_dict()[q_proj])  # trained, gathered weights
    same_as = RUNS[run][1]
    if same_as:  # the same global batches and gradients: the same model and metrics, to float noise
        ddp_rows, ddp_state, _, _, _ = strategy_fit(same_as)
        ddp_final = [r for r in ddp_rows if r["val/loss"]][-1]
        # greedy generations can flip a token on float noise: their metrics are not compared
        for key in (k for k in ddp_final if k.startswith("val/") and "gen" not in k and "win" not in k):
            assert float(final[key]) == pytest.approx(float(ddp_final[key]), rel=1e-4, abs=1e-6), key
        for name, value in ddp_state.items():
            torch.testing.assert_close(state[name], value, rtol=1e-4, atol=1e-6)
    if "--eval_harness.limit=6" in RUNS[run][0]:  # general ability, before and after: the same on sharded weights
        scores = [{k: v for k, v in r.items() if k.startswith("eval/") and v} for r in rows]
        scores = {k: v for row in scores for k, v in row.items()}
        assert "eval/delta/lit_dpo_arithmetic/acc" in scores
        if same_as:
            ddp_scores = {k: v for r in ddp_rows for k, v in r.items() if k.startswith("eval/") and v}
            assert scores == ddp_scores


@pytest.mark.integration
def test_single_device_recipe_runs(tiny_model_dir, files, tmp_path):
    args = ["--config", str(RECIPES / "base.yaml"), "--config", str(RECIPES / "strategy" / "single_device.yaml")]
    args += ["--trainer.accelerator=cpu", "--trainer.max_steps=2"]
    args += [f"--model.model_name_or_path={tiny_model_dir}", f"--data.path={files[0]}", f"--data.val_path={files[1]}"]
    rows = _run("lit_dpo.fit", args, tmp_path)
    assert sum(1 for r in rows if r["train/loss"]) == 2 and any(r["val/loss"] for r in rows)


@pytest.mark.integration
def test_gradient_accumulation_keeps_the_meaning_of_train_metrics(tiny_dirs, files, tmp_path):
    """4 pairs in one batch, or 2 x 2 accumulated: the same optimizer steps, logged once each, same values."""
    policy, reference = tiny_dirs
    args = [f"--model.model_name_or_path={policy}", f"--model.ref_model_name_or_path={reference}"]
    args += [f"--data.path={files[0]}", f"--data.val_path={files[1]}", "--trainer.max_steps=3"]
    args += ["--model.learning_rate=1e-3", "--data.pack_length=0"]
    whole = _run("lit_dpo.fit", [*args, "--data.batch_size=4"], tmp_path / "whole")
    accumulated = _run(
        "lit_dpo.fit", [*args, "--data.batch_size=2", "--trainer.accumulate_grad_batches=2"], tmp_path / "acc"
    )
    whole, accumulated = ([r for r in rows if r["train/loss"]] for rows in (whole, accumulated))
    assert len(whole) == len(accumulated) == 3
    for a, b in zip(whole, accumulated):
        for key in (k for k in a if k.startswith("train/") and a[k]):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-6), (a["step"], key)


@pytest.mark.integration
@pytest.mark.parametrize("run", ["fsdp", "fsdp-lora"])
def test_an_fsdp_checkpoint_folder_exports_the_fits_model(run, strategy_fit, tmp_path):
    """``python -m lit_dpo.export`` reads the distributed checkpoint's shards in one process (no optimizer state):
    the same weights as the fit's own export, LoRA merged."""
    from transformers import AutoModelForCausalLM

    from lit_dpo import export

    _, state, _, _, root = strategy_fit(run)
    checkpoint = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_dir()  # a folder of shards
    export.main(["--ckpt_path", str(checkpoint), "--export_dir", str(tmp_path / "out")])
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    assert exported.keys() == state.keys() and all(torch.equal(exported[k], state[k]) for k in state)
