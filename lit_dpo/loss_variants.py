"""The rest of TRL's DPOTrainer loss family, each a pure function like those in ``lit_dpo.loss``.

Signature ``fn(lp, beta, label_smoothing=0.0) -> (losses, chosen_rewards, rejected_rewards)``, all ``(B,)``.
Formulas and conventions are TRL's (v1.x ``DPOTrainer._compute_loss``), so numbers compare across tools;
``h`` is the DPO logit ``chosen_logratio - rejected_logratio`` on summed completion log-probs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_dpo.logps import LossOutput, PairLogps, rewards


def _h(lp: PairLogps) -> Tensor:
    return lp.chosen_logratios - lp.rejected_logratios


def sigmoid_norm_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """DPO on length-averaged log-ratios (advised when chosen and rejected differ much in length)."""
    h = lp.chosen_logratios / lp.chosen_tokens.clamp(min=1) - lp.rejected_logratios / lp.rejected_tokens.clamp(min=1)
    return (-F.logsigmoid(beta * h), *rewards(lp, beta))


def exo_pair_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """EXO (Ji et al. 2024, eq. 16): KL from the policy's pair preference to labels smoothed by ``label_smoothing``."""
    x = beta * _h(lp)
    chosen = torch.sigmoid(x) * (F.logsigmoid(x) - math.log1p(-label_smoothing))
    rejected = torch.sigmoid(-x) * (F.logsigmoid(-x) - math.log(label_smoothing))
    return (chosen + rejected, *rewards(lp, beta))


def nca_pair_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """NCA (Chen et al. 2024): absolute rewards, chosen pushed up and both kept from drifting up."""
    chosen, rejected = beta * lp.chosen_logratios, beta * lp.rejected_logratios
    losses = -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)
    return (losses, *rewards(lp, beta))


def bco_pair_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """BCO on pairs, as TRL's ``bco_pair`` (no running reward shift): chosen as positive, rejected as negative."""
    chosen, rejected = beta * lp.chosen_logratios, beta * lp.rejected_logratios
    return (-F.logsigmoid(chosen) - F.logsigmoid(-rejected), *rewards(lp, beta))


def sppo_hard_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """SPPO with hard win probabilities (Wu et al. 2024): log-ratios regressed to +-1/(2 beta)."""
    losses = (lp.chosen_logratios - 0.5 / beta) ** 2 + (lp.rejected_logratios + 0.5 / beta) ** 2
    return (losses, *rewards(lp, beta))


def _smoothed_sigmoid(delta: Tensor, beta: float, label_smoothing: float) -> Tensor:
    return -F.logsigmoid(beta * delta) * (1 - label_smoothing) - F.logsigmoid(-beta * delta) * label_smoothing


def aot_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """AOT (Melnyk et al. 2024), paired: policy and reference log-ratio margins compared after sorting the batch."""
    policy, _ = torch.sort(lp.policy_chosen - lp.policy_rejected, dim=0)
    reference, _ = torch.sort(lp.ref_chosen - lp.ref_rejected, dim=0)
    return (_smoothed_sigmoid(policy - reference, beta, label_smoothing), *rewards(lp, beta))


def aot_unpaired_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """AOT, unpaired: sorted chosen log-ratios against sorted rejected log-ratios."""
    chosen, _ = torch.sort(lp.chosen_logratios, dim=0)
    rejected, _ = torch.sort(lp.rejected_logratios, dim=0)
    return (_smoothed_sigmoid(chosen - rejected, beta, label_smoothing), *rewards(lp, beta))


def apo_zero_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """APO-zero (D'Oosterlinck et al. 2024, eq. 7): raise chosen, lower rejected likelihood."""
    losses = 1 - torch.sigmoid(beta * lp.chosen_logratios) + torch.sigmoid(beta * lp.rejected_logratios)
    return (losses, *rewards(lp, beta))


def apo_down_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """APO-down (eq. 8): lower both, the rejected more; for chosen answers worse than the model's own."""
    losses = torch.sigmoid(beta * lp.chosen_logratios) + 1 - torch.sigmoid(beta * _h(lp))
    return (losses, *rewards(lp, beta))


def discopop_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0, tau: float = 0.05) -> LossOutput:
    """DiscoPOP (Chris Lu et al. 2024, eq. 5): logistic and exponential losses blended by ``sigmoid(x / tau)``."""
    x = beta * _h(lp)
    blend = torch.sigmoid(x / tau)
    return (-F.logsigmoid(x) * (1 - blend) + torch.exp(-x) * blend, *rewards(lp, beta))


def sft_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """Negative log-likelihood of the chosen completions, averaged over all their tokens in the batch (TRL).

    A batch-level scalar, repeated per pair so it combines with the pairwise losses (``loss_weights``).
    """
    nll = -lp.policy_chosen.sum() / lp.chosen_tokens.sum().clamp(min=1)
    return (nll.expand_as(lp.policy_chosen), *rewards(lp, beta))
