"""Losses for unpaired data (rows of prompt, completion, desirable or not): KTO and unpaired APO-zero.

Same signature as ``lit_dpo.loss``, read differently (see ``lit_dpo.collate.UnpairedCollator``): for example i,
``lp.policy_chosen[i]`` / ``lp.ref_chosen[i]`` score its completion, ``lp.policy_rejected[i]`` /
``lp.ref_rejected[i]`` a mismatched completion (another example's, under this prompt), and ``lp.desirable[i]``
is its label. Formulas follow TRL's KTOTrainer (v1.x); rewards are ``beta * log-ratio`` of each completion,
returned twice (the metrics split them by label).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_dpo.logps import LossOutput, PairLogps


def kl_reference_point(lp: PairLogps) -> Tensor:
    """KTO's ``z_0``: the batch-mean log-ratio of the mismatched completions, clamped at 0, detached.

    The module replaces it (``lp.kl_reference``) with the mean over every rank's batch, as TRL gathers it.
    """
    if lp.kl_reference is not None:
        return lp.kl_reference.detach()
    return lp.rejected_logratios.mean().clamp(min=0).detach()


def _split(lp: PairLogps, desirable_losses: Tensor, undesirable_losses: Tensor, beta: float) -> LossOutput:
    losses = torch.where(lp.desirable, desirable_losses, undesirable_losses)
    rewards = beta * lp.chosen_logratios.detach()
    return losses, rewards, rewards


def kto_loss(
    lp: PairLogps,
    beta: float,
    label_smoothing: float = 0.0,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> LossOutput:
    """KTO (Ethayarajh et al. 2024, eq. 7): ``1 - sigmoid(beta * (r - z0))`` if desirable, else
    ``1 - sigmoid(beta * (z0 - r))``, with ``r`` the completion's log-ratio and ``z0`` the KL reference point."""
    logratios, kl = lp.chosen_logratios, kl_reference_point(lp)
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratios)))
    return _split(lp, desirable, undesirable, beta)


def apo_zero_unpaired_loss(
    lp: PairLogps,
    beta: float,
    label_smoothing: float = 0.0,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> LossOutput:
    """APO-zero, unpaired (D'Oosterlinck et al. 2024): raise desirable, lower undesirable likelihood; no KL term."""
    logratios = lp.chosen_logratios
    desirable = desirable_weight * (1 - torch.sigmoid(beta * logratios))
    undesirable = undesirable_weight * torch.sigmoid(beta * logratios)
    return _split(lp, desirable, undesirable, beta)
