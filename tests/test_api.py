"""The Python API: a plain Lightning program trains as ``python -m lit_dpo.fit`` does, with the same numbers."""

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from transformers import AutoModelForCausalLM, AutoTokenizer

import lit_dpo
from lit_dpo import fit
from lit_dpo.callbacks import FinishRun


@pytest.fixture(scope="module")
def files(tmp_path_factory, standard_rows, write_jsonl):
    folder = tmp_path_factory.mktemp("api_data")
    return write_jsonl(folder / "train.jsonl", standard_rows(16)), write_jsonl(
        folder / "val.jsonl", standard_rows(8, 1)
    )


def _metrics(path):
    """``{(step, metric): value}`` of a metrics.csv, leaving out wall-clock figures (``perf/``)."""
    with open(path, newline="") as handle:
        return {
            (row["step"], key): value
            for row in csv.DictReader(handle)
            for key, value in row.items()
            if value and key not in ("step", "epoch") and not key.startswith("perf/")
        }


def test_the_public_names_import():
    from lit_dpo import DPOModule, OnlineDataModule, PreferenceDataModule  # noqa: F401
    from lit_dpo.callbacks import DPOProgressBar, FinishRun, Throughput, TrainingHealth, WinRate  # noqa: F401

    assert issubclass(lit_dpo.OnlineDataModule, lit_dpo.PreferenceDataModule)
    assert isinstance(lit_dpo.PreferenceDataModule(), lit_dpo.PreferenceData)


def test_a_plain_trainer_trains_with_the_numbers_of_the_command_line(tiny_model_dir, files, tmp_path, fit_args):
    """Same options and seed: every train/ and val/ value the plain Trainer logs equals the CLI's, at each step,
    including the final validation that FinishRun adds when max_steps stops mid-epoch; and both export."""
    fit.main(fit_args(tiny_model_dir, *files, tmp_path / "cli", "--trainer.max_steps=3"))
    cli_run = tmp_path / "cli" / "lightning_logs" / "version_0"

    L.seed_everything(42)
    model = lit_dpo.DPOModule(model_name_or_path=tiny_model_dir)
    data = lit_dpo.PreferenceDataModule(path=files[0], val_path=files[1])  # the tokenizer: the model's
    trainer = L.Trainer(
        max_steps=3, logger=CSVLogger(tmp_path / "api"), callbacks=[FinishRun()], log_every_n_steps=1,
        num_sanity_val_steps=0, enable_progress_bar=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    api_run = tmp_path / "api" / "lightning_logs" / "version_0"

    assert data.tokenizer.name_or_path == tiny_model_dir
    api, cli = _metrics(api_run / "metrics.csv"), _metrics(cli_run / "metrics.csv")
    assert {key for _, key in api} >= {"train/loss", "train/rewards/margins", "val/loss", "val/rewards/accuracies"}
    assert ("3", "val/loss") in api  # the last step (3 of 4 in the epoch) was validated
    assert {k: v for k, v in cli.items() if k in api} == api
    assert len(api) == len([k for k in cli if k in api])
    for run in (api_run, cli_run):
        assert (run / "hf_model" / "config.json").is_file() and (run / "report.png").is_file()


def test_save_pretrained_merges_lora_and_includes_the_tokenizer(tiny_model_dir, tmp_path, make_batch, standard_rows):
    model = lit_dpo.DPOModule(model_name_or_path=tiny_model_dir, lora_r=4)
    model.configure_model()
    for name, param in model.policy.named_parameters():  # adapters away from their zero start
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    model.save_pretrained(tmp_path / "policy")

    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    assert not any("lora" in name for name in saved.state_dict())
    assert AutoTokenizer.from_pretrained(tmp_path / "policy").name_or_path == str(tmp_path / "policy")
    ids = make_batch(standard_rows(2)).input_ids
    with torch.no_grad():
        torch.testing.assert_close(saved(ids).logits, model.policy(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


def test_save_pretrained_before_the_models_load_says_so(tiny_model_dir, tmp_path):
    with pytest.raises(lit_dpo.errors.InputError, match="not loaded yet"):
        lit_dpo.DPOModule(model_name_or_path=tiny_model_dir).save_pretrained(tmp_path / "policy")
