"""``python -m lit_dpo.export``: any checkpoint to a Hugging Face folder, equal to what the fit itself exported."""

import pytest
import torch
from huggingface_hub import ModelCard
from peft import PeftModel
from transformers import AutoModelForCausalLM

from lit_dpo import export, fit


@pytest.fixture(scope="module")
def fitted(tiny_model_dir, pair_files, tmp_path_factory, fit_args):
    """``fitted(name, *options)``: a 2-step fit's root, run once per module."""
    done = {}

    def run(name, *options):
        if name not in done:
            root = tmp_path_factory.mktemp(name)
            fit.main(
                fit_args(tiny_model_dir, *pair_files, root, "--trainer.max_steps=2", "--finish.report=false", *options)
            )
            done[name] = root
        return done[name]

    return run


def _weights(folder):
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def _export(*args):
    export.main([str(a) for a in args])


def test_the_last_checkpoint_exports_the_fits_model_and_a_card(fitted, tmp_path):
    root = fitted("full")
    _export("--ckpt_path=last", "--root", root, "--export_dir", tmp_path / "out")
    mine, fits = _weights(tmp_path / "out"), _weights(root / "lightning_logs" / "version_0" / "hf_model")
    assert mine.keys() == fits.keys() and all(torch.equal(mine[k], fits[k]) for k in mine)
    text = (tmp_path / "out" / "README.md").read_text()
    assert "| optimizer steps | 2 |" in text and "| pairs seen | 8 |" in text  # 2 steps of 4 pairs
    assert ModelCard.load(tmp_path / "out" / "README.md").data.library_name == "transformers"


def test_a_lora_checkpoint_exports_merged_or_as_its_adapters(fitted, tiny_model_dir, tmp_path, tokenizer):
    root = fitted("lora", "--model.lora_r=4", "--model.learning_rate=1e-2")
    checkpoint = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    _export("--ckpt_path", checkpoint, "--export_dir", tmp_path / "merged")
    _export("--ckpt_path", checkpoint, "--export_dir", tmp_path / "adapter", "--adapter_only")
    merged, fits = _weights(tmp_path / "merged"), _weights(root / "lightning_logs" / "version_0" / "hf_model")
    assert all(torch.equal(merged[k], fits[k]) for k in fits)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file() and (tmp_path / "adapter" / "README.md").is_file()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    ids = torch.tensor([tokenizer("the quick brown fox")["input_ids"]])
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(ids).logits
        torch.testing.assert_close(adapted(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_adapters_of_a_full_fine_tune_are_refused(fitted, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _export("--ckpt_path=last", "--root", fitted("full"), "--export_dir", tmp_path / "x", "--adapter_only")
    assert exit_info.value.code == 2 and "no LoRA adapters" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_an_export_dir_holding_the_users_files_is_left_alone(fitted, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        _export("--ckpt_path=last", "--root", fitted("full"), "--export_dir", folder)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "did not write" in err
    assert [p.name for p in folder.iterdir()] == ["precious.txt"]


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda path: torch.save({"state_dict": {}}, path), "not a lit_dpo checkpoint"),
        (lambda path: None, "no such file or folder"),
    ],
)
def test_what_is_no_checkpoint_is_one_line(tmp_path, capsys, make, problem):
    make(tmp_path / "some.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        _export("--ckpt_path", tmp_path / "some.ckpt", "--export_dir", tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and problem in err and len(err.splitlines()) == 1


def test_last_without_any_run_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _export("--ckpt_path=last", "--root", tmp_path, "--export_dir", tmp_path / "out")
    assert "no run under" in capsys.readouterr().err
