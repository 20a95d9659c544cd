"""Losses for unpaired examples (prompt, completion, desirable or not): KTO and unpaired APO-zero.

They read ``UnpairedLogps``: each example's completion, and a mismatched completion (another example's, under
this prompt) whose log-ratio estimates KL(policy || reference). Formulas follow TRL's KTOTrainer (v1.x); the
reward ``beta * log-ratio`` of each completion is returned twice (the metrics split them by label).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from lit_dpo.losses.common import LossOutput
from lit_dpo.scoring.logps import UnpairedLogps


def kl_reference_point(lp: UnpairedLogps, mean_over_ranks: Callable[[Tensor], Tensor] = lambda x: x) -> Tensor:
    """KTO's ``z_0``: the batch-mean log-ratio of the mismatched completions (averaged over ranks, as TRL gathers
    it), clamped at 0, detached. ``lp.reference_point`` holds it when the caller computed it over ranks."""
    if lp.reference_point is not None:
        return lp.reference_point.detach()
    return mean_over_ranks(lp.kl_logratios.detach().mean()).clamp(min=0)


def kto_loss(
    lp: UnpairedLogps, beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> LossOutput:
    """KTO (Ethayarajh et al. 2024, eq. 7): ``1 - sigmoid(beta * (r - z0))`` if desirable, else
    ``1 - sigmoid(beta * (z0 - r))``, with ``r`` the completion's log-ratio and ``z0`` the KL reference point."""
    logratios, z0 = lp.logratios, kl_reference_point(lp)
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (logratios - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - logratios)))
    return _by_label(lp, desirable, undesirable, beta)


def apo_zero_unpaired_loss(
    lp: UnpairedLogps, beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> LossOutput:
    """APO-zero, unpaired (D'Oosterlinck et al. 2024): raise desirable, lower undesirable likelihood; no KL term."""
    desirable = desirable_weight * (1 - torch.sigmoid(beta * lp.logratios))
    undesirable = undesirable_weight * torch.sigmoid(beta * lp.logratios)
    return _by_label(lp, desirable, undesirable, beta)


def _by_label(lp: UnpairedLogps, desirable_losses: Tensor, undesirable_losses: Tensor, beta: float) -> LossOutput:
    rewards = beta * lp.logratios.detach()
    return LossOutput(torch.where(lp.desirable, desirable_losses, undesirable_losses), rewards, rewards)
