"""Losses that read the policy alone: SimPO and ORPO (no reference is loaded for them) and the SFT term.

SimPO and ORPO work on length-averaged log-probs and report rewards ``beta * average logp``, as TRL's CPO
(``loss_type="simpo"``) and ORPO trainers do. ``sft`` reads the reference only for the rewards it reports
(as TRL), so next to SimPO or ORPO (CPO-SimPO: ``[simpo, sft]``) there is still no reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_dpo.losses.common import LossOutput, length_averaged, rewards, smoothed_sigmoid_loss
from lit_dpo.scoring.logps import PairLogps


def simpo_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0, simpo_gamma: float = 0.5) -> LossOutput:
    """SimPO (Meng et al. 2024, eq. 6): ``-logsigmoid(beta * (avg_c - avg_r) - gamma)``, label-smoothed as TRL's CPO.

    Combine with ``sft`` for CPO-SimPO (TRL's ``cpo_alpha``).
    """
    chosen, rejected = _averaged(lp)
    losses = smoothed_sigmoid_loss(beta * (chosen - rejected) - simpo_gamma, label_smoothing)
    return LossOutput(losses, *_policy_rewards(chosen, rejected, beta))


def orpo_loss(lp: PairLogps, beta: float) -> LossOutput:
    """ORPO (Hong et al. 2024, eq. 6): chosen NLL minus ``beta * logsigmoid(log odds ratio)``.

    The odds of a completion are ``p / (1 - p)`` with ``p`` its length-averaged probability; the NLL term is
    the mean over every token of the batch's prompt + chosen sequences (TRL's cross-entropy, which scores the
    prompt too), repeated per pair.
    """
    # half precision would lose log(1 - p) for p near 1
    chosen, rejected = (t.to(torch.promote_types(t.dtype, torch.float32)) for t in _averaged(lp))
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    losses = chosen_nll(lp, with_prompt=True) - beta * F.logsigmoid(log_odds)
    return LossOutput(losses, *_policy_rewards(chosen, rejected, beta))


def sft_loss(lp: PairLogps, beta: float) -> LossOutput:
    """Negative log-likelihood of the chosen completions, averaged over all their tokens in the batch (TRL).

    A batch-level scalar, repeated per pair so it combines with the pairwise losses (``loss_weights``).
    """
    return LossOutput(chosen_nll(lp).expand_as(lp.policy_chosen), *rewards(lp, beta))


def chosen_nll(lp: PairLogps, with_prompt: bool = False) -> Tensor:
    """``()``: the policy's NLL per token over every chosen completion of the batch, and over the prompts too
    when ``with_prompt`` (and they were scored)."""
    scored, tokens = lp.policy_chosen.sum(), lp.chosen_tokens.sum()
    if with_prompt and lp.prompt is not None:
        scored, tokens = scored + lp.prompt.sum(), tokens + lp.prompt_tokens.sum()
    return -scored / tokens.clamp(min=1)


def _averaged(lp: PairLogps) -> tuple[Tensor, Tensor]:
    return length_averaged(lp.policy_chosen, lp.chosen_tokens), length_averaged(lp.policy_rejected, lp.rejected_tokens)


def _policy_rewards(chosen: Tensor, rejected: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    return beta * chosen.detach(), beta * rejected.detach()


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate near 0 and for large ``|x|`` (Maechler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
