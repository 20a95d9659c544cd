"""lit_dpo/reference/sync.py: TR-DPO's soft update, with a full copy and with LoRA, and when it runs."""

import math

import lightning as L
import pytest
import torch

from lit_dpo import lora
from lit_dpo.data import PreferenceDataModule
from lit_dpo.errors import InputError
from lit_dpo.module import DPOModule
from lit_dpo.reference.sync import soft_update, soft_update_lora


def test_soft_update_mixes_policy_into_reference(random_llama):
    policy, ref = random_llama(50, 0), random_llama(50, 1)
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    soft_update(policy, ref, 0.25)
    for name, value in ref.state_dict().items():
        torch.testing.assert_close(value, 0.25 * policy.state_dict()[name] + 0.75 * before[name])


def test_soft_update_lora_moves_the_base_and_keeps_the_policy(random_llama):
    policy = lora.add_adapters(random_llama(50, 0), 4, 8, 0.0, "all-linear")
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.1)
    ids = torch.randint(0, 50, (2, 7))
    before_policy = policy(input_ids=ids).logits
    state = policy.state_dict()
    merged = lora.merged_state_dict(state, lora.scaling(policy))
    base_before = {k: v.clone() for k, v in policy.get_base_model().state_dict().items() if "lora_" not in k}
    soft_update_lora(policy, 0.5)
    torch.testing.assert_close(policy(input_ids=ids).logits, before_policy, rtol=1e-5, atol=1e-5)
    with policy.disable_adapter():  # the reference: halfway between the old base and the policy
        base_after = {k: v for k, v in policy.get_base_model().state_dict().items() if "lora_" not in k}
    for key, old in base_before.items():
        plain = key.replace(".base_layer.", ".")
        torch.testing.assert_close(base_after[key], 0.5 * merged[plain] + 0.5 * old, rtol=1e-5, atol=1e-6)


class Losses(L.Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.values.append(outputs["loss"].item())


@pytest.mark.parametrize("lora_r", [0, 4], ids=["full", "lora"])
def test_reference_synced_every_n_steps(tiny_model_dir, tmp_path, lora_r, standard_rows, write_jsonl):
    """alpha = 1 makes the reference the policy at each sync: the next step's loss is log 2 exactly."""
    L.seed_everything(0)
    train = write_jsonl(tmp_path / "train.jsonl", standard_rows(32))
    module = DPOModule(
        model_name_or_path=tiny_model_dir, learning_rate=1e-2, ref_sync_steps=2, ref_sync_alpha=1.0, lora_r=lora_r
    )
    data = PreferenceDataModule(path=train, val_split=0, tokenizer_name_or_path=tiny_model_dir)
    losses = Losses()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[losses],
    )  # fmt: skip
    trainer.fit(module, data)
    log2 = math.log(2)
    # steps 0, 2, 4 start right after a sync (or at the start): policy == reference
    assert [round(v, 5) for v in losses.values[0::2]] == [round(log2, 5)] * 3
    assert all(abs(v - log2) > 1e-4 for v in losses.values[1::2])  # between syncs the policy has moved


def test_sync_refuses_what_it_cannot_do(tiny_model_dir):
    with pytest.raises(InputError, match="precompute_ref_log_probs"):
        DPOModule(model_name_or_path=tiny_model_dir, ref_sync_steps=2, precompute_ref_log_probs=True)
    with pytest.raises(InputError, match="reference-free"):
        DPOModule(model_name_or_path=tiny_model_dir, ref_sync_steps=2, loss_type="simpo")
