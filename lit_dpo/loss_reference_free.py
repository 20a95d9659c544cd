"""Reference-free preference losses: SimPO and ORPO score the policy alone, so no reference is loaded.

Same signature as ``lit_dpo.loss``: ``fn(lp, beta, label_smoothing=0.0, ...) -> (losses, chosen_rewards,
rejected_rewards)``, all ``(B,)``; the reference fields of ``lp`` are not read. Both work on length-averaged
log-probs and report rewards ``beta * average logp``, as TRL's CPO (``loss_type="simpo"``) and ORPO trainers do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_dpo.logps import LossOutput, PairLogps


def _averaged(lp: PairLogps) -> tuple[Tensor, Tensor]:
    return lp.policy_chosen / lp.chosen_tokens.clamp(min=1), lp.policy_rejected / lp.rejected_tokens.clamp(min=1)


def _policy_rewards(chosen: Tensor, rejected: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    return beta * chosen.detach(), beta * rejected.detach()


def simpo_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0, gamma: float = 0.5) -> LossOutput:
    """SimPO (Meng et al. 2024, eq. 6): ``-logsigmoid(beta * (avg_c - avg_r) - gamma)``, label-smoothed as TRL's CPO.

    Combine with ``sft`` for CPO-SimPO (TRL's ``cpo_alpha``).
    """
    chosen, rejected = _averaged(lp)
    x = beta * (chosen - rejected) - gamma
    losses = -F.logsigmoid(x) * (1 - label_smoothing) - F.logsigmoid(-x) * label_smoothing
    return (losses, *_policy_rewards(chosen, rejected, beta))


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate near 0 and for large ``|x|`` (Maechler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """ORPO (Hong et al. 2024, eq. 6): chosen NLL minus ``beta * logsigmoid(log odds ratio)``.

    The odds of a completion are ``p / (1 - p)`` with ``p`` its length-averaged probability; the NLL term is
    the mean over every token of the batch's prompt + chosen sequences (TRL's cross-entropy, which scores the
    prompt too when ``lp.prompt`` is given), repeated per pair.
    """
    # half precision would lose log(1 - p) for p near 1
    chosen, rejected = (t.to(torch.promote_types(t.dtype, torch.float32)) for t in _averaged(lp))
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    scored, tokens = lp.policy_chosen.sum(), lp.chosen_tokens.sum()
    if lp.prompt is not None:
        scored, tokens = scored + lp.prompt.sum(), tokens + lp.prompt_tokens.sum()
    nll = -scored / tokens.clamp(min=1)
    return (nll - beta * F.logsigmoid(log_odds), *_policy_rewards(chosen, rejected, beta))
