"""Preference losses as pure tensor functions, chosen by name through ``LOSSES``.

Every loss takes the summed completion log-probs of one batch of pairs (``PairLogps``) and returns
``(losses, chosen_rewards, rejected_rewards)``, each of shape ``(B,)``: per-pair losses that the caller
reduces, and the implicit rewards ``beta * (pi - ref)``, detached. Conventions follow TRL's DPOTrainer
(v1.x) so that numbers can be compared across tools: log-probs are summed over completion tokens, IPO
length-averages them, and ``label_smoothing`` enters the ``robust`` loss only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_dpo.errors import InputError


@dataclass
class PairLogps:
    """Summed completion log-probs of B pairs under policy and reference, each ``(B,)``."""

    policy_chosen: Tensor
    policy_rejected: Tensor
    ref_chosen: Tensor
    ref_rejected: Tensor
    chosen_tokens: Tensor  # (B,) number of completion tokens, used by length-normalised losses
    rejected_tokens: Tensor

    @property
    def chosen_logratios(self) -> Tensor:
        return self.policy_chosen - self.ref_chosen

    @property
    def rejected_logratios(self) -> Tensor:
        return self.policy_rejected - self.ref_rejected


LossOutput = tuple[Tensor, Tensor, Tensor]
LossFn = Callable[[PairLogps, float, float], LossOutput]


def completion_logps(logits: Tensor, targets: Tensor, seq_index: Tensor, num_seqs: int) -> tuple[Tensor, Tensor]:
    """Sum per-token log-probs into per-sequence log-probs.

    ``logits`` is ``(M, V)`` for the M scored completion positions (already shifted: row m predicts
    ``targets[m]``), ``seq_index`` ``(M,)`` says which of the ``num_seqs`` sequences each row belongs to.
    Returns ``(sum_logps, num_tokens)``, both ``(num_seqs,)``.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half-precision logsumexp loses digits
    # gather - logsumexp avoids materialising a second (M, V) tensor as log_softmax would
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    sums = token_logps.new_zeros(num_seqs).index_add(0, seq_index, token_logps)
    counts = torch.bincount(seq_index, minlength=num_seqs).to(sums.dtype)
    return sums, counts


def sequence_logps(logits: Tensor, labels: Tensor, average: bool = False) -> Tensor:
    """Log-prob of each sequence's labelled tokens from full logits ``(N, T, V)`` and labels ``(N, T)``.

    Labels are unshifted (``labels[:, t]`` is the token at position t, -100 where not scored). Returns
    ``(N,)``: the sum over scored tokens, or their mean when ``average``.
    """
    targets, logits = labels[:, 1:], logits[:, :-1]  # position t predicts token t+1
    mask = targets != -100
    seq_index = mask.nonzero()[:, 0]
    sums, counts = completion_logps(logits[mask], targets[mask], seq_index, labels.shape[0])
    return sums / counts.clamp(min=1) if average else sums


def _rewards(lp: PairLogps, beta: float) -> tuple[Tensor, Tensor]:
    return beta * lp.chosen_logratios.detach(), beta * lp.rejected_logratios.detach()


def sigmoid_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """DPO (Rafailov et al. 2023): ``-logsigmoid(beta * (chosen_logratio - rejected_logratio))``."""
    logits = lp.chosen_logratios - lp.rejected_logratios
    return (-F.logsigmoid(beta * logits), *_rewards(lp, beta))


def robust_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """Robust DPO (Chowdhury et al. 2024): unbiased under labels flipped with probability ``label_smoothing``."""
    logits = beta * (lp.chosen_logratios - lp.rejected_logratios)
    clean = -(1 - label_smoothing) * F.logsigmoid(logits)
    flipped = -label_smoothing * F.logsigmoid(-logits)
    return ((clean - flipped) / (1 - 2 * label_smoothing), *_rewards(lp, beta))


def hinge_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """SLiC hinge (Zhao et al. 2023): ``relu(1 - beta * logits)``."""
    logits = lp.chosen_logratios - lp.rejected_logratios
    return (torch.relu(1 - beta * logits), *_rewards(lp, beta))


def ipo_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """IPO (Azar et al. 2023), eq. 17, on length-averaged log-ratios as TRL does: ``(h - 1/(2 beta))^2``.

    Rewards stay ``beta * summed log-ratio`` like every other loss, so the logged metrics are comparable.
    """
    chosen = lp.chosen_logratios / lp.chosen_tokens.clamp(min=1)
    rejected = lp.rejected_logratios / lp.rejected_tokens.clamp(min=1)
    return ((chosen - rejected - 1 / (2 * beta)) ** 2, *_rewards(lp, beta))


LOSSES: dict[str, LossFn] = {
    "sigmoid": sigmoid_loss,
    "robust": robust_loss,
    "hinge": hinge_loss,
    "ipo": ipo_loss,
}

# Losses that read ``label_smoothing``; elsewhere a non-zero value would be silently ignored, so it is refused.
USES_LABEL_SMOOTHING = frozenset({"robust"})


def get_loss(name: str, label_smoothing: float = 0.0) -> LossFn:
    """Look up a loss by name, refusing options it would silently ignore."""
    if name not in LOSSES:
        raise InputError(f"unknown loss_type {name!r}; choose one of {sorted(LOSSES)}")
    if label_smoothing and name not in USES_LABEL_SMOOTHING:
        raise InputError(
            f"label_smoothing={label_smoothing} has no effect with loss_type={name!r}; "
            f"it is used by {sorted(USES_LABEL_SMOOTHING)} (TRL's convention: cDPO is loss_type='robust')"
        )
    if name == "robust" and not 0.0 <= label_smoothing < 0.5:
        raise InputError(f"loss_type='robust' needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    return LOSSES[name]
