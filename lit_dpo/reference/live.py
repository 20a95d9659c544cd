"""References that run live: a frozen model (``ModelReference``), or the LoRA policy's base with its adapters
switched off (``AdapterReference``: no second copy of the weights)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

import torch
from torch import Tensor

from lit_dpo.data.collate import Batch
from lit_dpo.errors import InputError
from lit_dpo.reference.sync import soft_update, soft_update_lora
from lit_dpo.scoring.forward import score_sequences


class Reference(ABC):
    """Where a batch's reference log-probs come from: ``logps(batch)``; TR-DPO moves it: ``sync(policy, alpha)``."""

    model: Optional[torch.nn.Module] = None  # a second model held in memory, if any
    fingerprint: Optional[str] = None  # SHA-256 of the reference weights, when its log-probs are to be cached

    @abstractmethod
    def logps(self, batch: Batch) -> Tensor:
        """Summed completion log-probs ``(2B,)`` of the batch, first completions first, without gradient."""

    def sync(self, policy: torch.nn.Module, alpha: float) -> None:
        """``ref <- alpha * policy + (1 - alpha) * ref``."""
        raise InputError(f"a {type(self).__name__} cannot move towards the policy (ref_sync_steps)")


class ModelReference(Reference):
    """A frozen model: eval mode, no gradient, never optimized. Under FSDP it is sharded like the policy."""

    def __init__(self, model: torch.nn.Module, ld_alpha: Optional[float] = None) -> None:
        self.model = model.requires_grad_(False).eval()
        self.ld_alpha = ld_alpha

    @torch.no_grad()  # not inference_mode: FSDP and autograd-saved tensors dislike inference tensors
    def logps(self, batch: Batch) -> Tensor:
        return score_sequences(self.model, batch, ld_alpha=self.ld_alpha).logps

    def sync(self, policy: torch.nn.Module, alpha: float) -> None:
        soft_update(policy, self.model, alpha)


class AdapterReference(Reference):
    """The LoRA policy's base model with adapters disabled (``PeftModel.disable_adapter``): exactly the starting
    policy, at no memory cost."""

    def __init__(self, policy: torch.nn.Module, ld_alpha: Optional[float] = None) -> None:
        self.policy = policy
        self.ld_alpha = ld_alpha

    @torch.no_grad()
    def logps(self, batch: Batch) -> Tensor:
        was_training = self.policy.training
        self.policy.eval()  # as a separate reference would be: no dropout
        try:
            with self.policy.disable_adapter():
                return score_sequences(self.policy, batch, ld_alpha=self.ld_alpha).logps
        finally:
            self.policy.train(was_training)

    def sync(self, policy: torch.nn.Module, alpha: float) -> None:
        soft_update_lora(policy, alpha)
