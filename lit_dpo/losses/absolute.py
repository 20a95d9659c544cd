"""Losses of each completion's own log-ratio ``c = pi_c - ref_c``, ``r = pi_r - ref_r`` (absolute rewards), not
only of their difference: chosen pushed up, rejected down, or both kept near the reference.

Formulas and conventions are TRL's (v1.x ``DPOTrainer._compute_loss``); rewards are ``beta * c`` and ``beta * r``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lit_dpo.losses.common import LossOutput, preference_logits, rewards
from lit_dpo.scoring.logps import PairLogps


def nca_pair_loss(lp: PairLogps, beta: float) -> LossOutput:
    """NCA (Chen et al. 2024): chosen pushed up and both kept from drifting up."""
    chosen, rejected = beta * lp.chosen_logratios, beta * lp.rejected_logratios
    losses = -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)
    return LossOutput(losses, *rewards(lp, beta))


def bco_pair_loss(lp: PairLogps, beta: float) -> LossOutput:
    """BCO on pairs, as TRL's ``bco_pair`` (no running reward shift): chosen as positive, rejected as negative."""
    chosen, rejected = beta * lp.chosen_logratios, beta * lp.rejected_logratios
    return LossOutput(-F.logsigmoid(chosen) - F.logsigmoid(-rejected), *rewards(lp, beta))


def sppo_hard_loss(lp: PairLogps, beta: float) -> LossOutput:
    """SPPO with hard win probabilities (Wu et al. 2024): log-ratios regressed to +-1/(2 beta)."""
    losses = (lp.chosen_logratios - 0.5 / beta) ** 2 + (lp.rejected_logratios + 0.5 / beta) ** 2
    return LossOutput(losses, *rewards(lp, beta))


def apo_zero_loss(lp: PairLogps, beta: float) -> LossOutput:
    """APO-zero (D'Oosterlinck et al. 2024, eq. 7): raise chosen, lower rejected likelihood."""
    losses = 1 - torch.sigmoid(beta * lp.chosen_logratios) + torch.sigmoid(beta * lp.rejected_logratios)
    return LossOutput(losses, *rewards(lp, beta))


def apo_down_loss(lp: PairLogps, beta: float) -> LossOutput:
    """APO-down (eq. 8): lower both, the rejected more; for chosen answers worse than the model's own."""
    losses = torch.sigmoid(beta * lp.chosen_logratios) + 1 - torch.sigmoid(beta * preference_logits(lp))
    return LossOutput(losses, *rewards(lp, beta))
