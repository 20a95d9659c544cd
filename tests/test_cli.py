"""End to end through the command line, on a tiny model: fit, validate, export, and bad input."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lit_dpo import fit, validate


@pytest.fixture(scope="module")
def data(tmp_path_factory, standard_rows, write_jsonl):
    root = tmp_path_factory.mktemp("data")
    return write_jsonl(root / "train.jsonl", standard_rows(64)), write_jsonl(root / "val.jsonl", standard_rows(16, 9))


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.integration
def test_fit_then_validate_from_the_command_line(tiny_model_dir, data, tmp_path, fit_args):
    args = fit_args(
        tiny_model_dir,
        *data,
        tmp_path,
        "--trainer.max_steps=24",
        "--trainer.max_epochs=2",
        "--model.learning_rate=2e-3",
    )
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "lit_dpo.fit", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    assert f"run directory  {run}" in done.stdout
    rows = _rows(run / "metrics.csv")
    train = [r for r in rows if r["train/loss"]]
    assert len(train) == 24 and float(train[0]["train/loss"]) == pytest.approx(0.6931, abs=1e-4)
    final = [r for r in rows if r["val/loss"]][-1]  # max_steps stopped mid-epoch: a final validation still ran
    assert int(final["step"]) == 24
    assert float(final["val/rewards/accuracies"]) >= 0.9, final  # the tiny model learns "yes" over "no"

    from transformers import AutoModelForCausalLM, AutoTokenizer

    exported = AutoModelForCausalLM.from_pretrained(run / "hf_model")
    assert AutoTokenizer.from_pretrained(run / "hf_model").eos_token == "<|im_end|>"
    assert exported.num_parameters() > 0

    # validate the exported policy against the same reference: the same val/ numbers
    val_args = fit_args(run / "hf_model", *data, tmp_path / "v", f"--model.ref_model_name_or_path={tiny_model_dir}")
    done = subprocess.run(
        [sys.executable, "-m", "lit_dpo.validate", *val_args], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    validated = [r for r in _rows(tmp_path / "v" / "lightning_logs" / "version_0" / "metrics.csv") if r["val/loss"]][-1]
    for key in ("val/loss", "val/rewards/margins", "val/rewards/accuracies", "val/logps/chosen"):
        assert float(validated[key]) == pytest.approx(float(final[key]), rel=1e-4)


def test_validate_a_checkpoint(tiny_model_dir, data, tmp_path, fit_args):
    fit.main(fit_args(tiny_model_dir, *data, tmp_path, "--trainer.max_steps=2"))
    ckpt = next((tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt"))
    validate.main(fit_args(tiny_model_dir, *data, tmp_path / "v", f"--ckpt_path={ckpt}"))
    first = [r for r in _rows(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") if r["val/loss"]][-1]
    again = [r for r in _rows(tmp_path / "v" / "lightning_logs" / "version_0" / "metrics.csv") if r["val/loss"]][-1]
    assert float(again["val/loss"]) == pytest.approx(float(first["val/loss"]), rel=1e-5)


def test_chat_rows_and_val_split(tiny_model_dir, tmp_path, chat_rows, write_jsonl, fit_args):
    train = write_jsonl(tmp_path / "chat.jsonl", chat_rows(40))
    fit.main(fit_args(tiny_model_dir, train, "null", tmp_path, "--data.val_split=0.1", "--trainer.max_steps=2"))
    rows = _rows(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    assert any(r["val/loss"] for r in rows)


def test_print_config_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit.main(["--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("model_name_or_path:", "ref_model_name_or_path:", "beta:", "loss_type:", "label_smoothing:"):
        assert option in out
    for option in ("batch_size:", "max_length:", "val_path:", "seed_everything: 42", "ckpt_path:"):
        assert option in out


BAD = {"prompt": "what is it", "chosen": None, "rejected": " no"}


@pytest.mark.parametrize(
    "content, extra, message",
    [
        ("{not json}\n", [], r"bad\.jsonl, row 1: invalid JSON"),
        (json.dumps(BAD) + "\n", [], r"bad\.jsonl, row 1, field 'chosen': is null"),
        (json.dumps(BAD | {"chosen": 7}) + "\n", [], r"bad\.jsonl, row 1, field 'chosen': expected a string"),
        (json.dumps({"prompt": "p", "chosen": "c"}) + "\n", [], r"bad\.jsonl, row 1, field 'rejected': missing"),
        ("", [], r"bad\.jsonl: no rows found"),
        (json.dumps({"prompt": "p", "completion": "c"}) + "\n", [], r"bad\.jsonl, row 1, field 'label': missing"),
        (
            json.dumps({"prompt": "p", "completion": "c", "label": "maybe"}) + "\n",
            [],
            r"bad\.jsonl, row 1, field 'label': expected true or false, got 'maybe'",
        ),
        (
            json.dumps({"prompt": "p", "completion": "c", "label": True}) + "\n" + json.dumps(BAD | {"chosen": "c"}),
            [],
            r"bad\.jsonl, row 2: mixes row forms: row 1 has prompt/completion/label",
        ),
        (
            json.dumps({"prompt": "p", "completion": " yes " * 40, "label": False}) + "\n",
            ["--data.max_length=32", "--data.truncation=error"],
            r"bad\.jsonl, row 1, field 'completion': prompt \+ completion is \d+ tokens > max_length 32",
        ),
        (
            json.dumps(BAD | {"chosen": " yes " * 40}) + "\n",
            ["--data.max_length=32", "--data.truncation=error"],
            r"bad\.jsonl, row 1, field 'chosen': prompt \+ chosen is \d+ tokens > max_length 32",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_model_dir, data, tmp_path, capsys, content, extra, message, fit_args):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        fit.main(fit_args(tiny_model_dir, bad, data[1], tmp_path, *extra))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lit_dpo: error: ") and "Traceback" not in "\n".join(err)
    assert __import__("re").search(message, err[-1]), err[-1]


def test_missing_file_and_bad_option(tiny_model_dir, data, tmp_path, capsys, fit_args):
    with pytest.raises(SystemExit) as exit_info:
        fit.main(fit_args(tiny_model_dir, tmp_path / "nope.jsonl", data[1], tmp_path))
    assert exit_info.value.code == 2
    assert "nope.jsonl: file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        fit.main(fit_args(tiny_model_dir, *data, tmp_path, "--model.loss_type=sigmoid", "--model.label_smoothing=0.1"))
    assert exit_info.value.code == 2
    assert "label_smoothing=0.1 has no effect" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        fit.main(fit_args(tmp_path / "no_model", *data, tmp_path))
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"lit_dpo: error: --model.model_name_or_path '{tmp_path / 'no_model'}': no such folder"


def test_truncation_is_counted_in_a_warning(tiny_model_dir, data, tmp_path, standard_rows, write_jsonl, fit_args):
    long = write_jsonl(tmp_path / "long.jsonl", [BAD | {"chosen": " yes " * 40}] + standard_rows(8))
    with pytest.warns(UserWarning, match=r"long\.jsonl: [1-9] of 9 pairs truncated and 0 dropped to fit max_length=40"):
        fit.main(
            fit_args(
                tiny_model_dir,
                long,
                data[1],
                tmp_path,
                "--data.max_length=40",
                "--data.truncation=keep_start",
                "--trainer.max_steps=1",
            )
        )


def test_bad_options_stop_before_any_model_loads(data, tmp_path, capsys, fit_args):
    for option, message in (("--data.batch_size=0", "--data.batch_size must be >= 1, got 0"),
                            ("--model.beta=0", "--model.beta must be > 0, got 0.0")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            fit.main(fit_args(tmp_path / "no_model_here", *data, tmp_path, option))
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"lit_dpo: error: {message}"


@pytest.mark.parametrize("in_backward", [True, False], ids=["adamw_in_backward", "adamw"])
def test_a_non_finite_gradient_stops_before_the_update(
    tiny_model_dir, data, tmp_path, capsys, monkeypatch, in_backward, fit_args
):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # killer.py: the fault-injecting callbacks
    args = fit_args(
        tiny_model_dir, *data, tmp_path, "--trainer.max_steps=4", f"--model.optimizer_in_backward={in_backward}"
    )
    args += ["--trainer.callbacks+=killer.NanGradientAtStep", "--trainer.callbacks.step=2"]
    with pytest.raises(SystemExit) as exit_info:
        fit.main(args)
    assert exit_info.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(
        "lit_dpo: training stopped: step 2: the gradient of model.layers.1.mlp.up_proj.weight is not finite; no update was made with it"
    )
    run = tmp_path / "lightning_logs" / "version_0"
    assert not (run / "hf_model").exists() and not (run / "checkpoints" / "last.ckpt").exists()


def test_a_logger_whose_package_is_missing_is_one_line(tiny_model_dir, tmp_path, capsys):
    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed")
    with pytest.raises(SystemExit) as exit_info:
        fit.main([f"--model.model_name_or_path={tiny_model_dir}", "--trainer.logger=lightning.pytorch.loggers.MLFlowLogger",
                  f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("lit_dpo: error: lightning.pytorch.loggers.MLFlowLogger needs a package that is not "
                                "installed: Requirement 'mlflow")  # fmt: skip


def test_a_configured_class_that_refuses_its_arguments_is_one_line(monkeypatch, capsys):
    """SLURM's environment with a variable it refuses: its own words, not jsonargparse's nested dump."""
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "slurm" / "multinode.yaml"
    for name, value in {
        "SLURM_JOB_ID": "5",
        "SLURM_NTASKS": "2",
        "SLURM_JOB_NAME": "dpo",
        "SLURM_NODELIST": "n1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        fit.main(["--config", str(recipe)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "lit_dpo: error: lightning.fabric.plugins.environments.SLURMEnvironment: You set `--ntasks=2` in your SLURM "
        "bash script, but this variable is not supported. HINT: Use `--ntasks-per-node=2` instead."
    )
