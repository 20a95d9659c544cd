"""lit_dpo's loss and metrics equal TRL's DPOTrainer on the same tiny policy, a different reference, and data."""

import pytest
import torch

from lit_dpo.losses import LOSSES

KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"]
KEYS += ["logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"]
SMOOTHING = {"robust": 0.2, "exo_pair": 1e-3, "aot": 0.1, "aot_unpaired": 0.1}
# every loss of TRL's DPOTrainer (the others: test_cpo_orpo_trainers.py, test_kto_trainer.py)
DPO_TRAINER_LOSSES = sorted(n for n, spec in LOSSES.items() if spec.reference != "free" and not spec.unpaired)
CASES = [(name, {"label_smoothing": SMOOTHING[name]} if name in SMOOTHING else {}) for name in DPO_TRAINER_LOSSES]
CASES += [(["sigmoid", "sft"], {"loss_weights": [0.8, 0.2]}), ("discopop", {"discopop_tau": 0.2})]
CASES += [
    ("sigmoid", {"use_weighting": True}),
    (["ipo", "hinge"], {"use_weighting": True}),
]  # WPO (TRL fails it with sft)
CASES += [("sigmoid", {"ld_alpha": 0.5}), ("sigmoid_norm", {"ld_alpha": 0.3})]  # LD-DPO


@pytest.mark.parametrize("loss_type, extra", CASES)
@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "chat"])
def test_matches_trl(
    tiny_dirs,
    tmp_path,
    loss_type,
    extra,
    conversational,
    standard_rows,
    chat_rows,
    trl_metrics,
    lit_metrics,
    batch_layouts,
):
    policy_dir, ref_dir = tiny_dirs
    rows = (chat_rows if conversational else standard_rows)(6, seed=3)
    options = {"beta": 0.3, "loss_type": loss_type, **extra}
    trl_loss = loss_type if isinstance(loss_type, list) else [loss_type]
    expected = trl_metrics("DPO", rows, tmp_path, policy_dir, ref_dir, **(options | {"loss_type": trl_loss}))
    assert expected["rewards/margins"] != 0  # a different reference: the comparison is not trivially 0 == 0
    for layout in batch_layouts:
        got = lit_metrics(rows, layout, model_name_or_path=policy_dir, ref_model_name_or_path=ref_dir, **options)
        for key in KEYS:
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (layout, key)


def test_initial_loss_is_log2_with_policy_as_reference(tiny_model_dir, standard_rows, lit_metrics):
    got = lit_metrics(standard_rows(4), "shared", model_name_or_path=tiny_model_dir)
    assert got["loss"] == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-6)
    assert got["rewards/chosen"] == got["rewards/rejected"] == 0.0


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_implicit_prompts_match_trl(
    tiny_dirs, tmp_path, loss_type, standard_rows, trl_metrics, lit_metrics, batch_layouts
):
    """hh-rlhf's form: the prompt left implicit in both strings; TRL extracts it (extract_prompt), so does lit_dpo."""
    policy_dir, ref_dir = tiny_dirs
    rows = [
        {"chosen": f"\n\nHuman: {r['prompt']}\n\nAssistant:{r['chosen']}", "rejected": f"\n\nHuman: {r['prompt']}\n\nAssistant:{r['rejected']}"}
        for r in standard_rows(6, seed=3)
    ]  # fmt: skip
    options = {"beta": 0.3, "loss_type": loss_type}
    expected = trl_metrics("DPO", rows, tmp_path, policy_dir, ref_dir, **(options | {"loss_type": [loss_type]}))
    assert expected["rewards/margins"] != 0
    for layout in batch_layouts:
        got = lit_metrics(rows, layout, model_name_or_path=policy_dir, ref_model_name_or_path=ref_dir, **options)
        for key in KEYS:
            # rewards subtract two log-probs near -136 here: fp32 leaves ~2e-6 of them, whatever the code
            tolerance = 1e-5 if key.startswith("rewards/") else 1e-6
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=tolerance), (layout, key)
