"""KTO and unpaired APO-zero equal TRL's KTOTrainer on the same tiny policy, a different reference, and rows."""

import pytest

KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"]
KEYS += ["logits/chosen", "logits/rejected"]
CASES = [
    ("kto", {}),
    ("kto", {"desirable_weight": 0.7, "undesirable_weight": 1.4}),
    ("apo_zero_unpaired", {}),
]


@pytest.mark.parametrize("loss_type, weights", CASES, ids=["kto", "kto_weighted", "apo_zero_unpaired"])
@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "chat"])
def test_matches_trl(
    tiny_dirs, tmp_path, loss_type, weights, conversational, standard_rows, chat_rows, unpaired_rows, trl_metrics,
    lit_metrics, batch_layouts,
):  # fmt: skip
    policy_dir, ref_dir = tiny_dirs
    # six rows, four desirable and two not: chosen and rejected completions of different prompts
    pairs = (chat_rows if conversational else standard_rows)(6, seed=4)
    rows = unpaired_rows(pairs, [True, False, True, True, False, True])
    trl_config = {"per_device_train_batch_size": len(rows), "train_sampling_strategy": "sequential"}
    options = {"beta": 0.3, "loss_type": loss_type, **weights}
    expected = trl_metrics("KTO", rows, tmp_path, policy_dir, ref_dir, **trl_config, **options)
    assert expected["rewards/margins"] != 0
    for layout in batch_layouts:
        got = lit_metrics(rows, layout, model_name_or_path=policy_dir, ref_model_name_or_path=ref_dir, **options)
        assert "rewards/accuracies" not in got  # undefined without pairs, as in TRL
        for key in KEYS:
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (layout, key)
        if loss_type == "kto":  # TRL logs the clamped batch mean; lit_dpo the mean itself
            assert max(got["kl"], 0.0) == pytest.approx(expected.get("kl"), rel=1e-4, abs=1e-6), layout
