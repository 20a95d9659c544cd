"""SimPO and ORPO equal TRL's CPO (``loss_type="simpo"``) and ORPO trainers on the same tiny policy and data."""

from functools import partial

import pytest
from conftest import chat_rows, lit_step_metrics, standard_rows

from lit_dpo.collate import PaddedCollator, SharedPrefixCollator
from lit_dpo.models import load_tokenizer
from lit_dpo.module import DPOModule
from lit_dpo.tokenization import tokenize_pair

trl = pytest.importorskip("trl")
# Not compared: logps/ (TRL's CPO/ORPO log length-averaged ones, lit_dpo always the summed ones) and logits/
# (theirs average every position of the padded batch, prompt and padding included; lit_dpo's, like TRL's DPO
# trainer, average the completion tokens)
KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"]
LAYOUTS = {
    "padded": PaddedCollator,
    "shared": SharedPrefixCollator,
    "packed": partial(SharedPrefixCollator, pack_length=64),
}


@pytest.fixture(scope="module")
def policy_without_bos(tiny_model_dir, tmp_path_factory):
    """The tiny policy with a tokenizer that has no BOS token, and a chat template whose turns end on EOS.

    TRL's CPO/ORPO tokenization (its legacy one) prepends BOS when the tokenizer has one, and appends EOS after
    a completion that does not end on it (here, the template's newline after <|im_end|>); the DPO trainer and
    lit_dpo keep the tokenizer's and template's own output. Without both, the inputs are the same."""
    import shutil

    path = tmp_path_factory.mktemp("nobos") / "policy"
    shutil.copytree(tiny_model_dir, path)
    tokenizer = load_tokenizer(str(path))
    tokenizer.bos_token = None
    tokenizer.chat_template = tokenizer.chat_template.replace("<|im_end|>\n", "<|im_end|>")
    tokenizer.save_pretrained(path)
    return str(path)


def trl_metrics(trainer_name, policy_dir, rows, tmp_path, **config):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    experimental = __import__(f"trl.experimental.{trainer_name.lower()}", fromlist=["x"])
    config_cls, trainer_cls = (
        getattr(experimental, f"{trainer_name}Config"),
        getattr(experimental, f"{trainer_name}Trainer"),
    )
    args = config_cls(output_dir=str(tmp_path / "trl"), report_to="none", use_cpu=True, bf16=False, **config)
    trainer = trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(policy_dir),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(policy_dir),
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    trainer.model.train()
    loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch, "train")
    return {"loss": loss.item()} | {k: float(metrics[k]) for k in KEYS[1:]}


def lit_metrics(policy_dir, rows, collator, **hparams):
    module = DPOModule(model_name_or_path=policy_dir, **hparams)
    module.configure_model()
    assert module.reference is None  # reference-free: nothing but the policy is loaded
    tokenizer = load_tokenizer(policy_dir)
    return lit_step_metrics(module, collator(tokenizer.pad_token_id)([tokenize_pair(tokenizer, r) for r in rows]))


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
def test_matches_trl(policy_without_bos, tmp_path, trainer_name, trl_config, lit_config, conversational):
    rows = (chat_rows if conversational else standard_rows)(6, seed=3)
    expected = trl_metrics(trainer_name, policy_without_bos, rows, tmp_path, beta=0.3, **trl_config)
    for layout, collator in LAYOUTS.items():
        got = lit_metrics(policy_without_bos, rows, collator, beta=0.3, **lit_config)
        assert "kl" not in got  # no reference, no KL estimate
        for key in KEYS:
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (layout, key)
