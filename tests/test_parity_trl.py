"""lit_dpo's loss and metrics equal TRL's DPOTrainer on the same tiny policy, a different reference, and data."""

from functools import partial

import pytest
import torch
from conftest import chat_rows, lit_step_metrics, standard_rows, trl_step_metrics

from lit_dpo.collate import PaddedCollator, SharedPrefixCollator
from lit_dpo.loss import LOSSES
from lit_dpo.models import load_tokenizer
from lit_dpo.module import DPOModule
from lit_dpo.tokenization import tokenize_pair

trl = pytest.importorskip("trl")
KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"]
KEYS += ["logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"]


def trl_metrics(policy_dir, ref_dir, rows, tmp_path, **config):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    # TRL defaults to bf16 autocast; lit_dpo to 32-true: compare both in fp32
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), report_to="none", use_cpu=True, bf16=False, **config)
    trainer = trl.DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(ref_dir),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(policy_dir),
    )
    loss, logged = trl_step_metrics(trainer, len(rows))
    return {"loss": loss} | {k: logged[k] for k in KEYS[1:]}


def lit_metrics(policy_dir, ref_dir, rows, collator, **hparams):
    module = DPOModule(model_name_or_path=policy_dir, ref_model_name_or_path=ref_dir, **hparams)
    module.configure_model()
    tokenizer = load_tokenizer(policy_dir)
    return lit_step_metrics(module, collator(tokenizer.pad_token_id)([tokenize_pair(tokenizer, r) for r in rows]))


SMOOTHING = {"robust": 0.2, "exo_pair": 1e-3, "aot": 0.1, "aot_unpaired": 0.1}
DPO_TRAINER_LOSSES = sorted(
    set(LOSSES) - {"simpo", "orpo", "kto", "apo_zero_unpaired"}
)  # test_parity_{reference_free,kto}.py
CASES = [(name, {"label_smoothing": SMOOTHING[name]} if name in SMOOTHING else {}) for name in DPO_TRAINER_LOSSES]
CASES += [(["sigmoid", "sft"], {"loss_weights": [0.8, 0.2]}), ("discopop", {"discopop_tau": 0.2})]
CASES += [
    ("sigmoid", {"use_weighting": True}),
    (["ipo", "hinge"], {"use_weighting": True}),
]  # WPO (TRL fails it with sft)
CASES += [("sigmoid", {"ld_alpha": 0.5}), ("sigmoid_norm", {"ld_alpha": 0.3})]  # LD-DPO


@pytest.mark.parametrize("loss_type, extra", CASES)
@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "chat"])
def test_matches_trl(tiny_dirs, tmp_path, loss_type, extra, conversational):
    policy_dir, ref_dir = tiny_dirs
    rows = (chat_rows if conversational else standard_rows)(6, seed=3)
    beta = 0.3
    trl_loss = loss_type if isinstance(loss_type, list) else [loss_type]
    expected = trl_metrics(policy_dir, ref_dir, rows, tmp_path, beta=beta, loss_type=trl_loss, **extra)
    assert expected["rewards/margins"] != 0  # a different reference: the comparison is not trivially 0 == 0
    layouts = {
        "padded": PaddedCollator,
        "shared": SharedPrefixCollator,
        "packed": partial(SharedPrefixCollator, pack_length=64),
    }
    for layout, collator in layouts.items():
        got = lit_metrics(policy_dir, ref_dir, rows, collator, beta=beta, loss_type=loss_type, **extra)
        for key in KEYS:
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (layout, key)


def test_initial_loss_is_log2_with_policy_as_reference(tiny_model_dir):
    got = lit_metrics(tiny_model_dir, None, standard_rows(4), SharedPrefixCollator)
    assert got["loss"] == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-6)
    assert got["rewards/chosen"] == got["rewards/rejected"] == 0.0
