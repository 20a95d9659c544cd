"""lit_dpo/callbacks/generations.py: WinRate generates with policy and reference, judges, logs and writes."""

import csv
import json
from pathlib import Path

import pytest

from lit_dpo import fit, validate


@pytest.fixture
def files(tmp_path, standard_rows, write_jsonl):
    return write_jsonl(tmp_path / "train.jsonl", standard_rows(16)), write_jsonl(
        tmp_path / "val.jsonl", standard_rows(6, 7)
    )


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_win_rate_judges_policy_against_reference_with_the_users_judge(
    tiny_model_dir, files, tmp_path, monkeypatch, fit_args
):
    (tmp_path / "win_rate_judges.py").write_text("def shorter(prompts, completions):\n"
                                           "    return [-len(c) for c in completions]\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)  # a judge is importable from the working directory
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--trainer.max_steps=3", "--model.learning_rate=1e-2",
                   "--trainer.callbacks+=lit_dpo.callbacks.WinRate", "--trainer.callbacks.judge=win_rate_judges.shorter",
                   "--trainer.callbacks.num_prompts=4", "--trainer.callbacks.max_new_tokens=6"))  # fmt: skip
    run = tmp_path / "lightning_logs" / "version_0"
    records = [json.loads(line) for line in (run / "generations" / "step_3.jsonl").read_text().splitlines()]
    assert len(records) == 4  # the user's WinRate replaced the default one (which would answer 6)
    assert set(records[0]) == {"prompt", "policy", "reference", "chosen", "rejected", "policy_length",
                               "reference_length", "win"}  # fmt: skip
    for r in records:
        assert 1 <= r["policy_length"] <= 6 and 1 <= r["reference_length"] <= 6
        shorter = len(r["policy"]) < len(r["reference"])
        assert r["win"] == (1.0 if shorter else 0.5 if len(r["policy"]) == len(r["reference"]) else 0.0)
    final = [row for row in _rows(run) if row["val/win_rate"]][-1]
    assert float(final["val/win_rate"]) == pytest.approx(sum(r["win"] for r in records) / 4)
    assert float(final["val/gen_length/policy"]) == pytest.approx(sum(r["policy_length"] for r in records) / 4)
    assert float(final["perf/generation_seconds"]) > 0  # what the generations cost, apart from training
    assert (run / "report.png").stat().st_size > 10_000


def test_before_training_the_policy_answers_as_the_reference(tiny_model_dir, files, tmp_path, fit_args):
    validate.main(fit_args(tiny_model_dir, *files, tmp_path, "--generations.max_new_tokens=5"))
    run = tmp_path / "lightning_logs" / "version_0"
    records = [json.loads(line) for line in (run / "generations" / "step_0.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["policy"] == r["reference"] and r["win"] == 0.5 for r in records)
    assert float([r for r in _rows(run) if r["val/win_rate"]][-1]["val/win_rate"]) == 0.5


def test_a_separate_reference_answers_with_its_own_weights(tiny_dirs, files, tmp_path, fit_args):
    policy, reference = tiny_dirs
    validate.main(fit_args(policy, *files, tmp_path, f"--model.ref_model_name_or_path={reference}",
                        "--generations.max_new_tokens=5"))  # fmt: skip
    run = tmp_path / "lightning_logs" / "version_0"
    records = [json.loads(line) for line in (run / "generations" / "step_0.jsonl").read_text().splitlines()]
    assert any(r["policy"] != r["reference"] for r in records)


def test_generations_can_be_turned_off(tiny_model_dir, files, tmp_path, fit_args):
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--trainer.max_steps=2", "--generations.num_prompts=0"))
    run = tmp_path / "lightning_logs" / "version_0"
    assert not (run / "generations").exists() and "val/win_rate" not in _rows(run)[0]


def test_a_failing_judge_costs_the_win_rate_not_the_training(
    tiny_model_dir, files, tmp_path, monkeypatch, capsys, fit_args
):
    """The judge raises at the final validation of a run whose last step ends its epoch: one line naming it, and
    the checkpoint and the export are still there (exit 0)."""
    (tmp_path / "broken_judges.py").write_text(
        "def broken(prompts, completions):\n    raise RuntimeError('no GPU for the judge')\n"
    )
    monkeypatch.chdir(tmp_path)
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--generations.judge=broken_judges.broken",
                      "--generations.num_prompts=2", "--generations.max_new_tokens=4"))  # fmt: skip
    run = tmp_path / "lightning_logs" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "hf_model" / "config.json").is_file()
    lines = [line for line in capsys.readouterr().err.splitlines() if "WinRate" in line]
    assert lines and lines[-1].startswith("lit_dpo: WinRate failed at step ")
    assert "(RuntimeError: no GPU for the judge); no win-rate at this validation, training goes on" in lines[-1]
    assert not any(row.get("val/win_rate") for row in _rows(run)) and any(row.get("val/loss") for row in _rows(run))


def test_a_generation_that_fails_costs_the_win_rate_not_the_training(
    tiny_model_dir, files, tmp_path, monkeypatch, capsys, fit_args
):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("lit_dpo.callbacks.generations.generate", out_of_memory)
    fit.main(fit_args(tiny_model_dir, *files, tmp_path, "--generations.num_prompts=2"))
    run = tmp_path / "lightning_logs" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "hf_model" / "config.json").is_file()
    line = [line for line in capsys.readouterr().err.splitlines() if "WinRate" in line][-1]
    assert line.startswith("lit_dpo: WinRate failed at step ") and "(RuntimeError: CUDA out of memory." in line
