"""lit_dpo/errors.py: the one-line messages users see for bad data and for a run that diverges."""

import pytest
import torch

from lit_dpo import fit
from lit_dpo.errors import (
    DataError,
    TrainingDiverged,
    nonfinite_gradients,
    raise_if_gradients_not_finite,
    raise_if_not_finite,
)


def test_a_data_error_names_file_row_and_field():
    assert str(DataError.at("d.jsonl", 3, "chosen", "missing")) == "d.jsonl, row 3, field 'chosen': missing"
    assert str(DataError.at("d.jsonl", None, None, "no rows found")) == "d.jsonl: no rows found"


def test_a_non_finite_term_stops_the_step_naming_it():
    raise_if_not_finite({"loss": torch.tensor([0.5, 1.0])}, 3)
    with pytest.raises(TrainingDiverged, match=r"^step 3: loss = nan is not finite; no update was made with it"):
        raise_if_not_finite({"loss": torch.tensor([0.5, float("nan")])}, 3)
    # another rank's NaN: every rank raises together
    with pytest.raises(TrainingDiverged, match="a term on another rank"):
        raise_if_not_finite({"loss": torch.tensor([0.5])}, 3, agree=lambda ok, all: False)


def test_non_finite_gradients_are_named():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model(torch.ones(1, 2)).sum().backward()
    assert nonfinite_gradients(model) == []
    model[1].weight.grad[0, 0] = float("inf")
    names = nonfinite_gradients(model)
    assert names == ["1.weight"]
    with pytest.raises(TrainingDiverged, match=r"^step 7: the gradient of 1.weight is not finite"):
        raise_if_gradients_not_finite(names, 7)


@pytest.fixture(scope="module")
def data(tmp_path_factory, standard_rows, write_jsonl):
    root = tmp_path_factory.mktemp("data")
    return write_jsonl(root / "train.jsonl", standard_rows(64)), write_jsonl(root / "val.jsonl", standard_rows(16, 9))


def test_a_diverging_run_stops_naming_step_and_term(tiny_model_dir, data, tmp_path, capsys, fit_args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    broken = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        broken.lm_head.weight[5] = float("nan")  # one vocabulary row: every log-softmax turns NaN
    broken.save_pretrained(tmp_path / "broken")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "broken")
    args = fit_args(tmp_path / "broken", *data, tmp_path, f"--model.ref_model_name_or_path={tiny_model_dir}")
    with pytest.raises(SystemExit) as exit_info:
        fit.main(args)
    assert exit_info.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("lit_dpo: training stopped: step 0: policy logps/chosen = nan"), line
    assert "reference" not in line and not (tmp_path / "lightning_logs" / "version_0" / "hf_model").exists()
