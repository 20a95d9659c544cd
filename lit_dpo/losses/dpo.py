"""Losses of the DPO logit ``h = (pi_c - ref_c) - (pi_r - ref_r)``: DPO and the variants that reshape it.

Formulas and conventions are TRL's (v1.x ``DPOTrainer._compute_loss``), so numbers compare across tools:
log-probs are summed over completion tokens (IPO and sigmoid_norm length-average them), and rewards are
``beta * summed log-ratio`` for every loss, so the logged metrics stay comparable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lit_dpo.losses.common import LossOutput, preference_logits, rewards, smoothed_sigmoid_loss
from lit_dpo.scoring.logps import PairLogps


def sigmoid_loss(lp: PairLogps, beta: float) -> LossOutput:
    """DPO (Rafailov et al. 2023): ``-logsigmoid(beta * h)``."""
    return LossOutput(-F.logsigmoid(beta * preference_logits(lp)), *rewards(lp, beta))


def robust_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """Robust DPO (Chowdhury et al. 2024): unbiased under labels flipped with probability ``label_smoothing``."""
    logits = beta * preference_logits(lp)
    clean = -(1 - label_smoothing) * F.logsigmoid(logits)
    flipped = -label_smoothing * F.logsigmoid(-logits)
    return LossOutput((clean - flipped) / (1 - 2 * label_smoothing), *rewards(lp, beta))


def hinge_loss(lp: PairLogps, beta: float) -> LossOutput:
    """SLiC hinge (Zhao et al. 2023): ``relu(1 - beta * h)``."""
    return LossOutput(torch.relu(1 - beta * preference_logits(lp)), *rewards(lp, beta))


def ipo_loss(lp: PairLogps, beta: float) -> LossOutput:
    """IPO (Azar et al. 2023), eq. 17, on length-averaged log-ratios as TRL does: ``(h - 1/(2 beta))^2``."""
    return LossOutput((preference_logits(lp, average=True) - 1 / (2 * beta)) ** 2, *rewards(lp, beta))


def sigmoid_norm_loss(lp: PairLogps, beta: float) -> LossOutput:
    """DPO on length-averaged log-ratios (advised when chosen and rejected differ much in length)."""
    return LossOutput(-F.logsigmoid(beta * preference_logits(lp, average=True)), *rewards(lp, beta))


def exo_pair_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """EXO (Ji et al. 2024, eq. 16): KL from the policy's pair preference to labels smoothed by ``label_smoothing``."""
    x = beta * preference_logits(lp)
    chosen = torch.sigmoid(x) * (F.logsigmoid(x) - math.log1p(-label_smoothing))
    rejected = torch.sigmoid(-x) * (F.logsigmoid(-x) - math.log(label_smoothing))
    return LossOutput(chosen + rejected, *rewards(lp, beta))


def discopop_loss(lp: PairLogps, beta: float, discopop_tau: float = 0.05) -> LossOutput:
    """DiscoPOP (Chris Lu et al. 2024, eq. 5): logistic and exponential losses blended by ``sigmoid(x / tau)``."""
    x = beta * preference_logits(lp)
    blend = torch.sigmoid(x / discopop_tau)
    return LossOutput(-F.logsigmoid(x) * (1 - blend) + torch.exp(-x) * blend, *rewards(lp, beta))


def aot_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """AOT (Melnyk et al. 2024), paired: policy and reference log-ratio margins compared after sorting the batch."""
    policy, _ = torch.sort(lp.policy_chosen - lp.policy_rejected, dim=0)
    reference, _ = torch.sort(lp.ref_chosen - lp.ref_rejected, dim=0)
    return LossOutput(smoothed_sigmoid_loss(beta * (policy - reference), label_smoothing), *rewards(lp, beta))


def aot_unpaired_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """AOT, unpaired: sorted chosen log-ratios against sorted rejected log-ratios."""
    chosen, _ = torch.sort(lp.chosen_logratios, dim=0)
    rejected, _ = torch.sort(lp.rejected_logratios, dim=0)
    return LossOutput(smoothed_sigmoid_loss(beta * (chosen - rejected), label_smoothing), *rewards(lp, beta))
