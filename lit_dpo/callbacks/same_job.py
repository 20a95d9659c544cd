"""Resume only into the same job: ``SameJob`` records in every checkpoint what the run trains on and with which
settings, and refuses to resume a fit from another job's checkpoint (``lit_dpo.resume``)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from lightning.pytorch import Callback, Trainer

from lit_dpo.data.protocol import preference_data
from lit_dpo.reference.schedule import HoldsReference
from lit_dpo.resume import check_resume, fingerprints


class SameJob(Callback):
    """Writes ``fingerprints`` under a checkpoint's ``lit_dpo`` key; on resume, ``check_resume`` refuses (one line,
    before training) a checkpoint whose data, reference or settings differ, unless ``allow_changed`` names them.
    ``DPOModule.configure_callbacks`` adds it with the module's options and ``allow_changed``."""

    def __init__(self, model_options: Mapping[str, Any], allow_changed: Sequence[str] = ()) -> None:
        self.model_options, self.allow_changed = dict(model_options), set(allow_changed)

    def fingerprints(self, trainer: Trainer, module: HoldsReference) -> dict[str, Any]:
        reference = module.reference.fingerprint if module.reference is not None else None
        return fingerprints(self.model_options, preference_data(trainer), reference, trainer)

    def on_save_checkpoint(self, trainer: Trainer, module: HoldsReference, checkpoint: dict[str, Any]) -> None:
        checkpoint["lit_dpo"] = self.fingerprints(trainer, module)

    def on_load_checkpoint(self, trainer: Trainer, module: HoldsReference, checkpoint: dict[str, Any]) -> None:
        # Lightning calls it only when a fit resumes, once the models are loaded
        saved, current = checkpoint.get("lit_dpo", {}), self.fingerprints(trainer, module)
        check_resume(saved, current, self.allow_changed, str(trainer.ckpt_path))
