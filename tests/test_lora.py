"""LoRA: the base with adapters disabled is the reference (no second copy), and the export merges the adapters."""

import pytest
import torch
from conftest import lit_step_metrics, standard_rows
from transformers import AutoModelForCausalLM

from lit_dpo import lora
from lit_dpo.collate import SharedPrefixCollator
from lit_dpo.models import load_tokenizer
from lit_dpo.module import DPOModule
from lit_dpo.tokenization import tokenize_pair


def _lora_module(policy_dir, **extra):
    module = DPOModule(model_name_or_path=policy_dir, lora_r=4, lora_alpha=8, **extra)
    module.configure_model()
    torch.manual_seed(5)
    for name, param in module.policy.named_parameters():
        if "lora_B" in name:  # PEFT starts B at 0 (policy == base); move it so that the test is not trivial
            param.data.normal_(0, 0.05)
    return module


def _metrics(module, policy_dir, rows):
    tokenizer = load_tokenizer(policy_dir)
    return lit_step_metrics(
        module, SharedPrefixCollator(tokenizer.pad_token_id)([tokenize_pair(tokenizer, r) for r in rows])
    )


def test_merged_state_dict_equals_peft_merge(tiny_model_dir):
    module = _lora_module(tiny_model_dir)
    merged = lora.merged_state_dict(module.policy.state_dict(), lora.scaling(module.policy))
    expected = module.policy.merge_and_unload().state_dict()
    assert merged.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(merged[name], value)


def test_adapters_disabled_reference_equals_a_full_reference_copy(tiny_model_dir, tmp_path):
    """DPO with LoRA == DPO with the merged policy against a separately loaded copy of the base."""
    rows = standard_rows(6, seed=2)
    with_lora = _lora_module(tiny_model_dir, beta=0.3)
    assert with_lora.reference is None  # one copy of the weights
    got = _metrics(with_lora, tiny_model_dir, rows)
    merged = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    merged.load_state_dict(lora.merged_state_dict(with_lora.policy.state_dict(), lora.scaling(with_lora.policy)))
    merged.save_pretrained(tmp_path / "merged")
    load_tokenizer(tiny_model_dir).save_pretrained(tmp_path / "merged")
    full = DPOModule(model_name_or_path=str(tmp_path / "merged"), ref_model_name_or_path=tiny_model_dir, beta=0.3)
    full.configure_model()
    expected = _metrics(full, tiny_model_dir, rows)
    assert expected["rewards/margins"] != 0
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key  # W x + s B A x vs (W + s B A) x


def test_lora_holds_one_copy_of_the_weights(tiny_model_dir):
    full = DPOModule(model_name_or_path=tiny_model_dir)
    full.configure_model()
    with_lora = _lora_module(tiny_model_dir)
    base = sum(p.numel() for p in full.policy.parameters())
    assert sum(p.numel() for p in full.parameters()) == 2 * base  # policy + reference
    adapters = sum(p.numel() for p in with_lora.policy.parameters() if p.requires_grad)
    assert 0 < adapters < base / 10
    assert sum(p.numel() for p in with_lora.parameters()) == base + adapters
    optimizer = with_lora.configure_optimizers()["optimizer"]
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == adapters


def test_initial_loss_is_log2(tiny_model_dir):
    module = DPOModule(model_name_or_path=tiny_model_dir, lora_r=4)  # B = 0: policy == reference
    module.configure_model()
    got = _metrics(module, tiny_model_dir, standard_rows(4))
    assert got["loss"] == pytest.approx(0.6931471805599453, rel=1e-6) and got["kl"] == 0.0
