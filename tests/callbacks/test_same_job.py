"""SameJob: a checkpoint records what its run trains on and how; a fit resumes only into the same job."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_dpo import DPOModule, PreferenceDataModule
from lit_dpo.errors import InputError


def _fit(model_dir, train, root, ckpt_path=None, **options):
    L.seed_everything(0)
    module = DPOModule(model_name_or_path=model_dir, precompute_ref_log_probs=False, **options)
    data = PreferenceDataModule(path=train, val_split=0, batch_size=2)
    saves = ModelCheckpoint(dirpath=root, every_n_train_steps=2, save_top_k=-1, filename="{step}")
    trainer = L.Trainer(
        accelerator="cpu", max_steps=3, logger=False, callbacks=[saves], enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return trainer


@pytest.fixture
def saved(tiny_model_dir, tmp_path, standard_rows, write_jsonl):
    train = write_jsonl(tmp_path / "train.jsonl", standard_rows(16))
    _fit(tiny_model_dir, train, tmp_path / "first")
    return train, tmp_path / "first" / "step=2.ckpt"


def test_a_checkpoint_records_the_data_the_reference_and_the_settings(saved):
    recorded = torch.load(saved[1], weights_only=True)["lit_dpo"]
    assert len(recorded["data"]) == 64 and len(recorded["reference"]) == 64  # SHA-256 hex digests
    assert recorded["settings"]["model.beta"] == 0.1 and recorded["settings"]["data.batch_size"] == 2
    assert "model.compile" not in recorded["settings"]  # speed options are free to change


def test_a_resume_with_another_beta_is_refused_unless_allowed(saved, tiny_model_dir, tmp_path):
    train, checkpoint = saved
    with pytest.raises(InputError, match=r"other settings: model\.beta 0\.1 -> 0\.5"):
        _fit(tiny_model_dir, train, tmp_path / "refused", checkpoint, beta=0.5)
    trainer = _fit(tiny_model_dir, train, tmp_path / "allowed", checkpoint, beta=0.5, allow_changed=["model.beta"])
    assert trainer.global_step == 3
