"""lit_dpo/parser.py: the --help a newcomer reads first, and every parse mistake as one line with exit status 2."""

import pytest

from lit_dpo import fit
from lit_dpo.callbacks import FinishRun, Throughput, TrainingHealth, WinRate
from lit_dpo.checkpoints import ResumableCheckpoint
from lit_dpo.data import PreferenceDataModule
from lit_dpo.data import __main__ as data_report
from lit_dpo.module import DPOModule


def _help(main, args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_opens_with_what_lit_dpo_is_and_five_examples(capsys):
    lines = _help(fit.main, ["--help"], capsys).splitlines()
    assert lines[0].startswith("usage: python -m lit_dpo.fit [--config FILE]")
    assert lines[2].startswith("lit_dpo: Direct Preference Optimization (DPO)")
    head = lines[: lines.index("options:")]
    assert len([line for line in head if line.lstrip().startswith("python -m lit_dpo.")]) == 5
    titles = [line for line in lines if line and not line.startswith(" ") and line.endswith(":")]
    model, data, trainer = (
        next(i for i, t in enumerate(titles) if key in t) for key in ("--model", "--data", "training")
    )
    assert model < data < trainer == len(titles) - 1  # lit_dpo's groups first, Lightning's Trainer last


@pytest.mark.parametrize(
    "documented", [DPOModule, PreferenceDataModule, ResumableCheckpoint, WinRate, TrainingHealth, Throughput, FinishRun]
)
def test_each_option_group_has_a_one_line_title(documented):
    """A group's title is its class docstring's first paragraph: a line of its own, never a sentence cut off."""
    assert "\n" not in documented.__doc__.strip().split("\n\n")[0]


def test_data_help_shows_the_data_options(capsys):
    body = _help(fit.main, ["--data.help"], capsys).split("\n", 1)[1]  # after the usage line
    assert "--data.path" in body and "--data.max_length" in body and "--trainer" not in body


def test_the_data_report_help_shows_only_what_it_reads(capsys):
    shown = _help(data_report.main, ["--help"], capsys)
    assert shown.startswith("usage: python -m lit_dpo.data")
    assert "--data.path" in shown and "--output" in shown and "--model.model_name_or_path" in shown
    assert "--trainer" not in shown and "--model.beta" not in shown and len(shown.splitlines()) < 150


@pytest.mark.parametrize(
    "args, line",
    [
        (["--model.lerning_rate=1e-5"], "unknown option --model.lerning_rate; did you mean --model.learning_rate?"),
        (["--data.batchsize=3"], "unknown option --data.batchsize; did you mean --data.batch_size?"),
        (["--trainer.max_step=3"], "unknown option --trainer.max_step; did you mean --trainer.max_steps?"),
        (
            ["--trainer.precision=bf16mixed"],
            "--trainer.precision: 'bf16mixed' is not one of 64, 32, 16, transformer-engine, transformer-engine-float16, "
            "16-true, 16-mixed, bf16-true, bf16-mixed, 32-true, 64-true, bf16",
        ),
        (["--model.dtype=fp32"], "--model.dtype: 'fp32' is not one of float32, bfloat16, float16"),
        (["--data.truncation=cut"], "--data.truncation: 'cut' is not one of error, keep_start, drop"),
        (["--model.beta=abc"], "--model.beta: expected float (got 'abc')"),
        (["--model.model_name_or_path=./models/nope"], "--model.model_name_or_path './models/nope': no such folder"),
        (["--model.model_name_or_path=/no/such/model"], "--model.model_name_or_path '/no/such/model': no such folder"),
    ],
)
def test_a_mistake_is_one_line_and_exit_2(args, line, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit.main(args)
    assert exit_info.value.code == 2
    errors = [e for e in capsys.readouterr().err.splitlines() if e.strip()]
    assert errors[-1] == f"lit_dpo: error: {line}"
    assert not any(e.startswith(("usage:", "tip:", "Traceback")) for e in errors)


def test_a_wrong_key_in_a_config_names_the_file_and_the_key(tmp_path, capsys):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("model:\n  beta: 0.2\n")
    bad.write_text("model:\n  lerning_rate: 1.0e-5\n")
    with pytest.raises(SystemExit) as exit_info:
        fit.main(["--config", str(good), f"--config={bad}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"lit_dpo: error: {bad}: unknown key model.lerning_rate; did you mean model.learning_rate?"
    )


def test_a_local_looking_model_path_is_never_looked_up_on_the_hub(monkeypatch, capsys):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("looked up on the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    with pytest.raises(SystemExit):
        fit.main(["--model.ref_model_name_or_path=../checkpoints/ref"])
    assert capsys.readouterr().err.strip().endswith("'../checkpoints/ref': no such folder")
