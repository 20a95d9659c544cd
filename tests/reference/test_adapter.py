"""LoRA: the base with adapters disabled is the reference (no second copy), and the export merges the adapters."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from lit_dpo import lora
from lit_dpo.hf import load_tokenizer
from lit_dpo.reference import AdapterReference


@pytest.fixture
def lora_module(dpo_module, tiny_model_dir):
    """``lora_module(**options)``: a LoRA DPOModule whose adapters are moved off 0, so that policy != base."""

    def make(**options):
        module = dpo_module(model_name_or_path=tiny_model_dir, lora_r=4, lora_alpha=8, **options)
        torch.manual_seed(5)
        for name, param in module.policy.named_parameters():
            if "lora_B" in name:  # PEFT starts B at 0 (policy == base); move it so that the test is not trivial
                param.data.normal_(0, 0.05)
        return module

    return make


def _held_parameters(module):
    """Every parameter the module holds in memory: its own (policy) and a separate reference model's."""
    reference = module.reference.model if module.reference is not None and module.reference.model else None
    return sum(p.numel() for p in module.parameters()) + (
        sum(p.numel() for p in reference.parameters()) if reference else 0
    )


def test_merged_state_dict_equals_peft_merge(lora_module):
    module = lora_module()
    merged = lora.merged_state_dict(module.policy.state_dict(), lora.scaling(module.policy))
    expected = module.policy.merge_and_unload().state_dict()
    assert merged.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(merged[name], value)


def test_adapters_disabled_reference_equals_a_full_reference_copy(
    lora_module, dpo_module, tiny_model_dir, tmp_path, make_batch, standard_rows, step_metrics
):
    """DPO with LoRA == DPO with the merged policy against a separately loaded copy of the base."""
    batch = make_batch(standard_rows(6, seed=2))
    with_lora = lora_module(beta=0.3)
    assert isinstance(with_lora.reference, AdapterReference) and with_lora.reference.model is None  # one copy
    got = step_metrics(with_lora, batch)
    merged = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    merged.load_state_dict(lora.merged_state_dict(with_lora.policy.state_dict(), lora.scaling(with_lora.policy)))
    merged.save_pretrained(tmp_path / "merged")
    load_tokenizer(tiny_model_dir).save_pretrained(tmp_path / "merged")
    full = dpo_module(model_name_or_path=str(tmp_path / "merged"), ref_model_name_or_path=tiny_model_dir, beta=0.3)
    expected = step_metrics(full, batch)
    assert expected["rewards/margins"] != 0
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key  # W x + s B A x vs (W + s B A) x


def test_lora_holds_one_copy_of_the_weights(lora_module, dpo_module, tiny_model_dir):
    full = dpo_module(model_name_or_path=tiny_model_dir)
    with_lora = lora_module()
    base = sum(p.numel() for p in full.policy.parameters())
    assert _held_parameters(full) == 2 * base  # policy + reference
    adapters = sum(p.numel() for p in with_lora.policy.parameters() if p.requires_grad)
    assert 0 < adapters < base / 10
    assert _held_parameters(with_lora) == base + adapters
    optimizer = with_lora.configure_optimizers()["optimizer"]
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == adapters


def test_initial_loss_is_log2(dpo_module, tiny_model_dir, make_batch, standard_rows, step_metrics):
    module = dpo_module(model_name_or_path=tiny_model_dir, lora_r=4)  # B = 0: policy == reference
    got = step_metrics(module, make_batch(standard_rows(4)))
    assert got["loss"] == pytest.approx(0.6931471805599453, rel=1e-6) and got["kl"] == 0.0
