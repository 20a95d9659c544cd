"""SimPO and ORPO equal TRL's CPO (``loss_type="simpo"``) and ORPO trainers on the same tiny policy and data."""

import shutil

import pytest

from lit_dpo.hf import load_tokenizer

# Not compared: logps/ (TRL's CPO/ORPO log length-averaged ones, lit_dpo always the summed ones) and logits/
# (theirs average every position of the padded batch, prompt and padding included; lit_dpo's, like TRL's DPO
# trainer, average the completion tokens)
KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"]


@pytest.fixture(scope="module")
def policy_without_bos(tiny_model_dir, tmp_path_factory):
    """The tiny policy with a tokenizer that has no BOS token, and a chat template whose turns end on EOS.

    TRL's CPO/ORPO tokenization (its legacy one) prepends BOS when the tokenizer has one, and appends EOS after
    a completion that does not end on it (here, the template's newline after <|im_end|>); the DPO trainer and
    lit_dpo keep the tokenizer's and template's own output. Without both, the inputs are the same."""
    path = tmp_path_factory.mktemp("nobos") / "policy"
    shutil.copytree(tiny_model_dir, path)
    tokenizer = load_tokenizer(str(path))
    tokenizer.bos_token = None
    tokenizer.chat_template = tokenizer.chat_template.replace("<|im_end|>\n", "<|im_end|>")
    tokenizer.save_pretrained(path)
    return str(path)


CASES = [
    ("CPO", {"loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": 0.7}, {"loss_type": "simpo", "simpo_gamma": 0.7}),
    (
        "CPO",
        {"loss_type": "simpo", "cpo_alpha": 1.0, "simpo_gamma": 0.5, "label_smoothing": 0.1},
        {"loss_type": ["simpo", "sft"], "label_smoothing": 0.1},
    ),
    ("ORPO", {}, {"loss_type": "orpo"}),
]


@pytest.mark.parametrize("trainer_name, trl_config, lit_config", CASES, ids=["simpo", "cpo_simpo", "orpo"])
@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "chat"])
def test_matches_trl(
    policy_without_bos, tmp_path, trainer_name, trl_config, lit_config, conversational, standard_rows, chat_rows,
    trl_metrics, lit_metrics, dpo_module, batch_layouts,
):  # fmt: skip
    rows = (chat_rows if conversational else standard_rows)(6, seed=3)
    expected = trl_metrics(trainer_name, rows, tmp_path, policy_without_bos, beta=0.3, **trl_config)
    assert dpo_module(model_name_or_path=policy_without_bos, **lit_config).reference is None  # nothing but the policy
    for layout in batch_layouts:
        got = lit_metrics(rows, layout, model_name_or_path=policy_without_bos, beta=0.3, **lit_config)
        assert "kl" not in got  # no reference, no KL estimate
        for key in KEYS:
            assert got[key] == pytest.approx(float(expected[key]), rel=1e-4, abs=1e-6), (layout, key)
