"""ReferenceSchedule: TR-DPO's updates land in the checkpoint of the step that made them, so a resumed run trains
against the reference an uninterrupted one has."""

import math

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_dpo import DPOModule, PreferenceDataModule
from lit_dpo.reference.schedule import ReferenceSchedule


class Losses(L.Callback):
    def __init__(self):
        self.values = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.values[trainer.global_step - 1] = outputs["loss"].item()


def _fit(model_dir, train, root, max_steps, ckpt_path=None, lora_r=0):
    L.seed_everything(0)
    module = DPOModule(
        model_name_or_path=model_dir, learning_rate=1e-2, ref_sync_steps=2, ref_sync_alpha=1.0, lora_r=lora_r
    )
    data = PreferenceDataModule(path=train, val_split=0, batch_size=2)
    losses = Losses()
    saves = ModelCheckpoint(dirpath=root, every_n_train_steps=2, save_top_k=-1, filename="{step}")
    trainer = L.Trainer(
        accelerator="cpu", max_steps=max_steps, logger=False, callbacks=[losses, saves], enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return losses.values


@pytest.mark.parametrize("lora_r", [0, 4], ids=["full", "lora"])
def test_a_run_resumed_at_a_sync_step_trains_against_the_synced_reference(
    tiny_model_dir, tmp_path, standard_rows, write_jsonl, lora_r
):
    train = write_jsonl(tmp_path / "train.jsonl", standard_rows(16))
    whole = _fit(tiny_model_dir, train, tmp_path / "whole", 4, lora_r=lora_r)
    resumed = _fit(tiny_model_dir, train, tmp_path / "resumed", 4, tmp_path / "whole" / "step=2.ckpt", lora_r)
    # alpha = 1: step 2 starts right after a sync, so policy == reference there, resumed or not
    assert resumed[2] == pytest.approx(math.log(2), abs=1e-5)
    assert [resumed[2], resumed[3]] == pytest.approx([whole[2], whole[3]], abs=1e-5)


def test_the_module_brings_its_schedule_to_a_plain_trainer(tiny_model_dir):
    module = DPOModule(model_name_or_path=tiny_model_dir, ref_sync_steps=3, ref_sync_alpha=0.5, ref_sync_epochs=2)
    (schedule,) = [c for c in module.configure_callbacks() if isinstance(c, ReferenceSchedule)]
    assert (schedule.sync_steps, schedule.sync_alpha, schedule.sync_epochs) == (3, 0.5, 2)
    assert schedule.cache_settings == {"dtype": "float32", "ld_alpha": None}
