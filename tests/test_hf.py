"""lit_dpo/hf.py: the export is written whole or not at all, and a failed one is one line on every rank."""

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from lit_dpo import fit
from lit_dpo.atomic import MARKER
from lit_dpo.hf import export_policy, load_model, load_tokenizer


class _OneRank:
    is_global_zero = True

    def broadcast(self, value, src=0):
        return value


@pytest.fixture
def files(tmp_path, standard_rows, write_jsonl):
    return write_jsonl(tmp_path / "train.jsonl", standard_rows(8)), write_jsonl(
        tmp_path / "val.jsonl", standard_rows(4, 9)
    )


def test_an_export_replaces_the_previous_one_whole(tiny_model_dir, tmp_path):
    target = tmp_path / "hf_model"
    export_policy(load_model(tiny_model_dir), load_tokenizer(tiny_model_dir), target, _OneRank())
    (target / "stale.safetensors").write_text("from an older export")
    export_policy(load_model(tiny_model_dir), load_tokenizer(tiny_model_dir), target, _OneRank())
    assert not (target / "stale.safetensors").exists() and not list(tmp_path.glob("hf_model.*"))
    assert AutoModelForCausalLM.from_pretrained(target).num_parameters() > 0


def test_an_export_dir_that_is_a_file_stops_before_training(tiny_model_dir, files, tmp_path, capsys, fit_args):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    for export_dir in (taken, taken / "policy"):
        with pytest.raises(SystemExit) as exit_info:
            fit.main(
                fit_args(
                    tiny_model_dir, *files, tmp_path / "run", "--trainer.max_steps=1", f"--export_dir={export_dir}"
                )
            )
        assert exit_info.value.code == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert (
            line
            == f"lit_dpo: error: --export_dir {export_dir}: {taken} is a file; name a folder for the trained policy"
        )
    assert not (tmp_path / "run").exists()  # nothing trained


def test_a_failed_export_is_one_line_and_exit_2(tiny_model_dir, files, tmp_path, capsys, monkeypatch, fit_args):
    import lit_dpo.hf

    def disk_full(model, tokenizer, directory, state_dict=None):  # gets as far as the config, then the disk is full
        Path(directory).mkdir(parents=True)
        Path(directory, "config.json").write_text("{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lit_dpo.hf, "export_hf", disk_full)
    with pytest.raises(SystemExit) as exit_info:
        fit.main(
            fit_args(tiny_model_dir, *files, tmp_path, "--trainer.max_steps=1", f"--export_dir={tmp_path / 'policy'}")
        )
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        line
        == f"lit_dpo: error: could not write the trained policy to {tmp_path / 'policy'}: [Errno 28] No space left on device"
    )
    assert not (tmp_path / "policy").exists()  # no half export in place


def test_an_export_dir_holding_the_users_files_is_refused_and_left_alone(
    tiny_model_dir, files, tmp_path, capsys, fit_args
):
    """--export_dir naming a folder lit_dpo did not write: refused before training, one line, nothing touched."""
    folder = tmp_path / "my_models"
    (folder / "sub").mkdir(parents=True)
    (folder / "precious.txt").write_text("mine")
    (folder / "sub" / "notes.md").write_text("also mine")
    before = sorted((p.relative_to(folder), p.read_bytes() if p.is_file() else None) for p in folder.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        fit.main(fit_args(tiny_model_dir, *files, tmp_path / "run", "--trainer.max_steps=1", f"--export_dir={folder}"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"lit_dpo: error: --export_dir {folder}: a folder holding files lit_dpo did not write; name a new or empty "
        "folder (lit_dpo replaces only its own exports)"
    )
    after = sorted((p.relative_to(folder), p.read_bytes() if p.is_file() else None) for p in folder.rglob("*"))
    assert after == before and not (tmp_path / "run").exists()  # refused before training, nothing written
    # an export lit_dpo wrote is replaced by the next one, which is marked as lit_dpo's in turn
    export = tmp_path / "export"
    for _ in range(2):
        fit.main(fit_args(tiny_model_dir, *files, tmp_path / "run", "--trainer.max_steps=1", f"--export_dir={export}"))
    assert (export / MARKER).is_file() and (export / "config.json").is_file()
