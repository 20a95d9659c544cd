"""KTO and unpaired APO-zero equal TRL's KTOTrainer on the same tiny policy, a different reference, and rows."""

from functools import partial

import pytest
from conftest import chat_rows, lit_step_metrics, standard_rows, trl_step_metrics

from lit_dpo.collate import PaddedCollator, SharedPrefixCollator, UnpairedCollator
from lit_dpo.models import load_tokenizer
from lit_dpo.module import DPOModule
from lit_dpo.tokenization import tokenize_unpaired

trl = pytest.importorskip("trl")
KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"]
KEYS += ["logits/chosen", "logits/rejected"]
LAYOUTS = {
    "padded": PaddedCollator,
    "shared": SharedPrefixCollator,
    "packed": partial(SharedPrefixCollator, pack_length=64),
}


def unpaired_rows(conversational: bool) -> list[dict]:
    """Six rows, four desirable and two not: chosen and rejected completions of different prompts."""
    pairs = (chat_rows if conversational else standard_rows)(6, seed=4)
    labels = [True, False, True, True, False, True]
    return [
        {"prompt": p["prompt"], "completion": p["chosen"] if good else p["rejected"], "label": good}
        for p, good in zip(pairs, labels)
    ]


def trl_metrics(policy_dir, ref_dir, rows, tmp_path, **config):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    args = trl.KTOConfig(
        output_dir=str(tmp_path / "trl"), report_to="none", use_cpu=True, bf16=False,
        per_device_train_batch_size=len(rows), train_sampling_strategy="sequential", **config,
    )  # fmt: skip
    trainer = trl.KTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(ref_dir),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(policy_dir),
    )
    loss, logged = trl_step_metrics(trainer, len(rows))
    return {"loss": loss} | {k: logged[k] for k in KEYS[1:]} | {"kl": logged.get("kl")}


def lit_metrics(policy_dir, ref_dir, rows, collator, **hparams):
    module = DPOModule(model_name_or_path=policy_dir, ref_model_name_or_path=ref_dir, **hparams)
    module.configure_model()
    tokenizer = load_tokenizer(policy_dir)
    batch = UnpairedCollator(collator(tokenizer.pad_token_id))([tokenize_unpaired(tokenizer, r) for r in rows])
    return lit_step_metrics(module, batch)


CASES = [
    ("kto", {}),
    ("kto", {"desirable_weight": 0.7, "undesirable_weight": 1.4}),
    ("apo_zero_unpaired", {}),
]


@pytest.mark.parametrize("loss_type, weights", CASES, ids=["kto", "kto_weighted", "apo_zero_unpaired"])
@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "chat"])
def test_matches_trl(tiny_dirs, tmp_path, loss_type, weights, conversational):
    policy_dir, ref_dir = tiny_dirs
    rows = unpaired_rows(conversational)
    expected = trl_metrics(policy_dir, ref_dir, rows, tmp_path, beta=0.3, loss_type=loss_type, **weights)
    assert expected["rewards/margins"] != 0
    for layout, collator in LAYOUTS.items():
        got = lit_metrics(policy_dir, ref_dir, rows, collator, beta=0.3, loss_type=loss_type, **weights)
        assert "rewards/accuracies" not in got  # undefined without pairs, as in TRL
        for key in KEYS:
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (layout, key)
        if loss_type == "kto":  # TRL logs the clamped batch mean; lit_dpo the mean itself
            assert max(got["kl"], 0.0) == pytest.approx(expected["kl"], rel=1e-4, abs=1e-6), layout
