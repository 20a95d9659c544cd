"""lit_dpo/data/online.py and rounds.py: online DPO's rounds of sampling, judging and pairing, their files and
metrics, resuming mid-round, and ranks sharing the prompts."""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lit_dpo import fit
from lit_dpo.data import read_rows

TESTS = Path(__file__).resolve().parents[1]
JUDGES = (  # a reward function (shorter is better) and one that records which rank judged which prompt
    "import os\n"
    "def shorter(prompts, completions, answer):\n"
    "    return [-len(c) for c in completions]\n"
    "def recorded(prompts, completions):\n"
    "    with open(f\"judged_{os.environ.get('LOCAL_RANK', '0')}.txt\", 'a') as out:\n"
    "        out.writelines(str(p) + '\\n' for p in prompts)\n"
    "    return [-len(c) for c in completions]\n"
    "def down_on_rank_1(prompts, completions):\n"
    "    if os.environ.get('LOCAL_RANK', '0') == '1':\n"
    "        raise RuntimeError('the judge server is down')\n"
    "    return [0.0] * len(completions)\n"
)


@pytest.fixture
def prompt_files(tmp_path, standard_rows, write_jsonl):
    (tmp_path / "my_judges.py").write_text(JUDGES)
    rows = lambda n, seed: [{"prompt": r["prompt"], "answer": "yes"} for r in standard_rows(n, seed)]  # noqa: E731
    return write_jsonl(tmp_path / "prompts.jsonl", rows(12, 0)), write_jsonl(tmp_path / "val.jsonl", rows(4, 9))


def _online(model_dir, prompts, val, root, *extra):
    return [f"--model.model_name_or_path={model_dir}", "--data=lit_dpo.data.OnlineDataModule", f"--data.path={prompts}",
            f"--data.val_path={val}", "--data.judge=my_judges.shorter", "--data.max_new_tokens=8",
            "--data.batch_size=2", "--trainer.max_epochs=2", "--model.learning_rate=1e-3",
            "--generations.max_new_tokens=4", f"--trainer.default_root_dir={root}",
            "--trainer.enable_progress_bar=false", *extra]  # fmt: skip


def _metrics(run):
    with open(run / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_each_round_samples_judges_pairs_writes_and_logs(tiny_model_dir, prompt_files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fit.main(_online(tiny_model_dir, *prompt_files, tmp_path, "--data.num_samples=3"))
    run = tmp_path / "lightning_logs" / "version_0"
    rows = _metrics(run)
    rounds = [r for r in rows if r["online/round"]]
    assert [float(r["online/round"]) for r in rounds] == [0.0, 1.0]
    steps = 0
    for number, logged in enumerate(rounds):
        path = run / "online" / f"round_{number}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(records) == float(logged["online/pairs"]) > 0
        read_back = read_rows(str(path))  # reusable offline as preference pairs (an empty sample is left out, counted)
        assert len(read_back.rows) + sum(map(len, read_back.dropped.values())) == len(records)
        assert int(logged["step"]) == steps  # logged as the round starts
        steps += -(-len(records) // 2)  # one epoch of 2 pairs a step over the round's pairs
        scores = [s for r in records for s in r["scores"]]
        assert float(logged["online/score_max"]) >= max(scores)
        for r in records:  # best vs worst by the judge (shorter is better), never a tie
            assert len(r["samples"]) == 3 and r["scores"] == [-len(s) for s in r["samples"]]
            assert r["chosen_score"] == max(r["scores"]) > r["rejected_score"] == min(r["scores"])
            assert r["chosen"] == r["samples"][r["scores"].index(max(r["scores"]))] and r["answer"] == "yes"
    assert max(int(r["step"]) for r in rows if r["train/loss"]) == steps - 1
    assert (run / "online" / "val_pairs.jsonl").exists() and [r for r in rows if r["val/win_rate"]]
    assert "lit_dpo: round 1: 12 prompts x 3 samples in" in capsys.readouterr().out


def test_a_round_needs_reloaded_dataloaders_and_a_live_reference(
    tiny_model_dir, prompt_files, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        fit.main(_online(tiny_model_dir, *prompt_files, tmp_path, "--trainer.reload_dataloaders_every_n_epochs=2"))
    assert stop.value.code == 2 and "--trainer.reload_dataloaders_every_n_epochs=1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        fit.main(_online(tiny_model_dir, *prompt_files, tmp_path, "--model.precompute_ref_log_probs=true"))
    assert stop.value.code == 2 and "online DPO makes its pairs each round" in capsys.readouterr().err


def test_a_bad_prompt_row_is_one_line(tiny_model_dir, tmp_path, write_jsonl, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "fine"}, {"question": "no prompt"}])
    with pytest.raises(SystemExit) as stop:
        fit.main(_online(tiny_model_dir, prompts, prompts, tmp_path, "--data.judge=exact_answer"))
    assert stop.value.code == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1] == f"lit_dpo: error: {prompts}, row 2, field 'prompt': missing"
    )


def _fit(root, cwd, *args):
    env = os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": f"{TESTS}{os.pathsep}{cwd}"}
    return subprocess.run(
        [sys.executable, "-m", "lit_dpo.fit", *args], env=env, capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.integration
def test_a_run_stopped_mid_round_resumes_with_the_same_pairs_and_losses(tiny_model_dir, prompt_files, tmp_path):
    common = _online(tiny_model_dir, *prompt_files, "ROOT", "--trainer.max_epochs=3", "--model.ref_sync_epochs=1")
    straight = _fit(tmp_path, tmp_path, *[a.replace("ROOT", str(tmp_path / "straight")) for a in common])
    assert straight.returncode == 0, straight.stderr[-3000:]
    run_a = tmp_path / "straight" / "lightning_logs" / "version_0"
    round_1 = [int(r["step"]) for r in _metrics(run_a) if r["online/round"] == "1.0"][0]
    args = [a.replace("ROOT", str(tmp_path / "stopped")) for a in common]
    stopped = _fit(
        tmp_path, tmp_path, *args, "--trainer.callbacks+=killer.TermAtStep", f"--trainer.callbacks.step={round_1 + 1}"
    )
    assert stopped.returncode == 143, stopped.stderr[-3000:]  # in round 1, after its first step
    run_b = tmp_path / "stopped" / "lightning_logs" / "version_0"
    pairs_before = (run_b / "online" / "round_1.jsonl").read_text()
    resumed = _fit(tmp_path, tmp_path, *args, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "round 1:" not in resumed.stdout and "round 2:" in resumed.stdout  # read back, not sampled again
    assert (
        (run_b / "online" / "round_1.jsonl").read_text()
        == pairs_before
        == (run_a / "online" / "round_1.jsonl").read_text()
    )
    for name in ("round_0", "round_2", "val_pairs"):
        assert (run_b / "online" / f"{name}.jsonl").read_text() == (run_a / "online" / f"{name}.jsonl").read_text()
    losses = [
        {int(r["step"]): float(r["train/loss"]) for r in _metrics(run) if r["train/loss"]} for run in (run_a, run_b)
    ]
    assert sorted(losses[1]) == sorted(losses[0])
    for step, loss in losses[0].items():
        assert losses[1][step] == pytest.approx(loss, rel=1e-4), step


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])  # FSDP: sharded policy, decoded in lockstep with the KV cache
def test_two_ranks_sample_disjoint_shares_of_the_prompts(strategy, tiny_model_dir, prompt_files, tmp_path):
    args = _online(tiny_model_dir, *prompt_files, tmp_path, "--data.judge=my_judges.recorded", "--trainer.max_epochs=1",
                   "--config", str(TESTS.parent / "recipes" / "strategy" / f"{strategy}.yaml"), "--trainer.accelerator=cpu",
                   "--trainer.devices=2", "--generations.num_prompts=0")  # fmt: skip
    done = _fit(tmp_path, tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    shares = [(tmp_path / f"judged_{rank}.txt").read_text().splitlines() for rank in (0, 1)]
    prompts = [json.loads(line)["prompt"] for line in Path(prompt_files[0]).read_text().splitlines()]
    val = [json.loads(line)["prompt"] for line in Path(prompt_files[1]).read_text().splitlines()]
    k = 4  # each prompt's samples are judged together, on one rank
    assert sorted(set(shares[0])) == sorted(set(prompts[0::2] + val[0::2]))
    assert sorted(set(shares[1])) == sorted(set(prompts[1::2] + val[1::2]))
    assert len(shares[0]) == len(shares[1]) == (6 + 2) * k
    run = tmp_path / "lightning_logs" / "version_0"
    records = [json.loads(line) for line in (run / "online" / "round_0.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == [p for p in prompts if p in {r["prompt"] for r in records}]  # in order


@pytest.mark.integration
def test_a_judge_failing_on_one_rank_stops_every_rank_at_once(tiny_model_dir, prompt_files, tmp_path):
    """Rank 1's judge raises while rank 0's works: both stop within seconds with one line, never the process-group
    timeout."""
    args = _online(tiny_model_dir, *prompt_files, tmp_path, "--data.judge=my_judges.down_on_rank_1",
                   "--config", str(TESTS.parent / "recipes" / "strategy" / "ddp.yaml"), "--trainer.accelerator=cpu",
                   "--trainer.devices=2", "--generations.num_prompts=0")  # fmt: skip
    start = time.monotonic()
    done = _fit(tmp_path, tmp_path, *args)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("lit_dpo: error:")]
    assert errors and set(errors) == {
        "lit_dpo: error: online DPO, round 0: the judge failed on rank 1 (RuntimeError: the judge server is down)"
    }, done.stderr[-3000:]
    assert time.monotonic() - start < 120 and "Traceback" not in done.stderr


def test_the_demo_recipe_runs_and_a_round_without_pairs_ends_training(tiny_model_dir, tmp_path, capsys):
    """recipes/online/answers.yaml on the tiny model: its random answers never hold the demo's answers, so every
    prompt's samples tie at 0, round 0 forms no pair, and the fit ends there, saying why, with its validation and
    export."""
    recipe = TESTS.parent / "recipes" / "online" / "answers.yaml"
    with pytest.warns(UserWarning, match="online round 0: no prompt gave a pair"):
        fit.main(["--config", str(recipe), f"--model.model_name_or_path={tiny_model_dir}", "--data.max_new_tokens=4",
                  "--data.num_samples=2", "--generations.max_new_tokens=4", f"--trainer.default_root_dir={tmp_path}",
                  "--trainer.enable_progress_bar=false"])  # fmt: skip
    run = tmp_path / "lightning_logs" / "version_0"
    rows = _metrics(run)
    assert [float(r["online/pairs"]) for r in rows if r["online/round"]] == [0.0]
    assert not any(r.get("train/loss") for r in rows) and (run / "hf_model" / "config.json").exists()
    out = capsys.readouterr().out
    assert "lit_dpo: round 0: 48 prompts x 2 samples in" in out and "mean score 0.000" in out


VLM_JUDGE = (  # shorter is better; each prompt's images reach the judge as PIL images
    "def pictured(prompts, completions, images):\n"
    "    from PIL import Image\n"
    "    assert all(len(i) == 1 and isinstance(i[0], Image.Image) for i in images), images\n"
    "    return [-len(c) for c in completions]\n"
)


def _image_prompts(folder, held_out=2):
    """Prompts with an image each (8, the last ``held_out`` in the validation file) and the judge's module."""
    from PIL import Image

    (folder / "my_vlm_judges.py").write_text(VLM_JUDGE)
    (folder / "pics").mkdir()
    rows = []
    for i in range(8):
        Image.new("RGB", (24 + 8 * (i % 3), 32), (30 * i, 100, 200 - 20 * i)).save(folder / "pics" / f"{i}.png")
        content = [{"type": "image"}, {"type": "text", "text": f"what color is {i}?"}]
        rows.append({"prompt": [{"role": "user", "content": content}], "images": [f"pics/{i}.png"]})
    prompts, val = folder / "prompts.jsonl", folder / "val.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows[: 8 - held_out]))
    val.write_text("".join(json.dumps(r) + "\n" for r in rows[8 - held_out :]))
    return rows, str(prompts), str(val)


@pytest.mark.integration
def test_online_dpo_from_prompts_with_images(tiny_vlm_dir, tmp_path, monkeypatch):
    """Samples generated from the prompts and their images, judged with the images, paired with them (a batch's
    image tokens without images would stop the fit); the round's file holds the images as files and reads back as
    image rows."""
    monkeypatch.chdir(tmp_path)
    rows, prompts, val = _image_prompts(tmp_path)
    fit.main(_online(tiny_vlm_dir, str(prompts), str(val), tmp_path, "--data.judge=my_vlm_judges.pictured",
                     "--trainer.max_epochs=1", "--data.temperature=1.5"))  # fmt: skip
    run = tmp_path / "lightning_logs" / "version_0"
    logged = _metrics(run)
    assert [r for r in logged if r["train/loss"]] and [r for r in logged if r["val/win_rate"]]
    records = [json.loads(line) for line in (run / "online" / "round_0.jsonl").read_text().splitlines()]
    assert records and all(len(r["images"]) == 1 and r["images"][0].startswith("images/") for r in records)
    read_back = read_rows(str(run / "online" / "round_0.jsonl"))
    assert len(read_back.rows) == len(records)
    by_prompt = {json.dumps(r["prompt"]): r["images"] for r in rows}
    for row in read_back.rows:  # the same image bytes as the prompt's file
        original = (tmp_path / by_prompt[json.dumps(row.prompt)][0]).read_bytes()
        assert row.images == (original,)


@pytest.mark.integration
def test_online_dpo_from_prompts_with_images_under_fsdp(tiny_vlm_dir, tmp_path):
    """The sharded policy samples in lockstep on both ranks, their vision encoders running together; one held-out
    prompt for two ranks: the rank without one decodes beside the other, its judge not called."""
    _, prompts, val = _image_prompts(tmp_path, held_out=1)
    args = _online(tiny_vlm_dir, prompts, val, tmp_path, "--data.judge=my_vlm_judges.pictured", "--trainer.max_epochs=1",
                   "--config", str(TESTS.parent / "recipes" / "strategy" / "fsdp.yaml"), "--trainer.accelerator=cpu",
                   "--trainer.devices=2")  # fmt: skip
    done = _fit(tmp_path, tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = _metrics(tmp_path / "lightning_logs" / "version_0")
    assert [r for r in logged if r["train/loss"]] and [r for r in logged if r["val/win_rate"]]
