"""When the reference changes during a fit: its log-probs cached before training (``precompute_ref_log_probs``),
TR-DPO's soft update every ``ref_sync_steps`` optimizer steps, iterative DPO's hard update at the start of every
``ref_sync_epochs`` epochs. A Lightning callback that ``DPOModule.configure_callbacks`` adds, so a plain
``L.Trainer`` gets it too."""

from __future__ import annotations

import gc
from typing import Any, Optional, Protocol

import torch
from lightning.pytorch import Callback, Trainer

from lit_dpo.data.protocol import PreferenceData
from lit_dpo.reference.cached import cache_stages
from lit_dpo.reference.live import Reference


class HoldsReference(Protocol):
    """What the schedule reads from the LightningModule (``DPOModule``)."""

    policy: Optional[torch.nn.Module]
    reference: Optional[Reference]
    caches_reference: bool  # decided when the models load (``lit_dpo.reference.should_cache``)
    global_step: int
    current_epoch: int

    @property
    def data(self) -> Optional[PreferenceData]: ...


class ReferenceSchedule(Callback):
    """Caches or moves the module's reference at the right moments of a fit.

    Args:
        sync_steps: TR-DPO: ``ref <- sync_alpha * policy + (1 - sync_alpha) * ref`` after every this many optimizer
            steps (0: never).
        sync_alpha: TR-DPO's mixing weight.
        sync_epochs: iterative DPO: the reference becomes the policy every this many epochs (0: never).
        cache_settings: what the cached log-probs depend on besides weights and tokens (dtype, ``ld_alpha``).
    """

    def __init__(
        self, sync_steps: int = 0, sync_alpha: float = 1.0, sync_epochs: int = 0, cache_settings: Optional[dict] = None
    ) -> None:
        self.sync_steps, self.sync_alpha, self.sync_epochs = sync_steps, sync_alpha, sync_epochs
        self.cache_settings = cache_settings or {}
        self.last_sync_step = 0

    def on_fit_start(self, trainer: Trainer, module: HoldsReference) -> None:
        if module.caches_reference:
            self._cache(trainer, module, ["train", "val"])

    def on_validation_start(self, trainer: Trainer, module: HoldsReference) -> None:
        if module.caches_reference and trainer.state.fn == "validate":
            self._cache(trainer, module, ["val"])

    def _cache(self, trainer: Trainer, module: HoldsReference, stages: list[str]) -> None:
        settings = self.cache_settings | {"precision": str(trainer.precision)}
        module.reference = cache_stages(module.reference, module.data, stages, trainer, settings)
        gc.collect()  # the live reference model, now unreferenced, is the largest thing to free

    def on_train_epoch_start(self, trainer: Trainer, module: HoldsReference) -> None:
        # iterative DPO: each round's reference is the policy it starts from (a resumed round has it restored)
        epoch = module.current_epoch
        if self.sync_epochs and epoch > 0 and epoch % self.sync_epochs == 0:
            module.reference.sync(module.policy, 1.0)

    def on_train_batch_end(self, trainer: Trainer, module: HoldsReference, *args: Any) -> None:
        # after every sync_steps-th optimizer step (once, whatever the gradient accumulation), before the checkpoint
        # callbacks save that step: a run resumed from it has the updated reference
        step = module.global_step
        if self.sync_steps and step % self.sync_steps == 0 and step != self.last_sync_step:
            module.reference.sync(module.policy, self.sync_alpha)
            self.last_sync_step = step
