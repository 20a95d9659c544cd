"""Preference losses as pure tensor functions, chosen by name through ``LOSSES``.

Every loss takes the summed completion log-probs of one batch of pairs (``PairLogps``) and returns
``(losses, chosen_rewards, rejected_rewards)``, each of shape ``(B,)``: per-pair losses that the caller
reduces, and the implicit rewards ``beta * (pi - ref)``, detached. Conventions follow TRL's DPOTrainer
(v1.x) so that numbers can be compared across tools: log-probs are summed over completion tokens, IPO
length-averages them, and ``label_smoothing`` enters only the losses that define it (robust, exo_pair, aot,
simpo). The DPO core is here; the rest of TRL's family is in ``lit_dpo.loss_variants``, the reference-free
SimPO and ORPO in ``lit_dpo.loss_reference_free``.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from lit_dpo import loss_variants as variants
from lit_dpo.errors import InputError
from lit_dpo.logps import LossOutput, PairLogps, completion_logps, rewards, sequence_logps
from lit_dpo.loss_reference_free import orpo_loss, simpo_loss
from lit_dpo.loss_unpaired import apo_zero_unpaired_loss, kto_loss

__all__ = ["LOSSES", "PairLogps", "completion_logps", "get_loss", "sequence_logps"]

LossFn = Callable[..., LossOutput]


def sigmoid_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """DPO (Rafailov et al. 2023): ``-logsigmoid(beta * (chosen_logratio - rejected_logratio))``."""
    logits = lp.chosen_logratios - lp.rejected_logratios
    return (-F.logsigmoid(beta * logits), *rewards(lp, beta))


def robust_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """Robust DPO (Chowdhury et al. 2024): unbiased under labels flipped with probability ``label_smoothing``."""
    logits = beta * (lp.chosen_logratios - lp.rejected_logratios)
    clean = -(1 - label_smoothing) * F.logsigmoid(logits)
    flipped = -label_smoothing * F.logsigmoid(-logits)
    return ((clean - flipped) / (1 - 2 * label_smoothing), *rewards(lp, beta))


def hinge_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """SLiC hinge (Zhao et al. 2023): ``relu(1 - beta * logits)``."""
    logits = lp.chosen_logratios - lp.rejected_logratios
    return (torch.relu(1 - beta * logits), *rewards(lp, beta))


def ipo_loss(lp: PairLogps, beta: float, label_smoothing: float = 0.0) -> LossOutput:
    """IPO (Azar et al. 2023), eq. 17, on length-averaged log-ratios as TRL does: ``(h - 1/(2 beta))^2``.

    Rewards stay ``beta * summed log-ratio`` like every other loss, so the logged metrics are comparable.
    """
    chosen = lp.chosen_logratios / lp.chosen_tokens.clamp(min=1)
    rejected = lp.rejected_logratios / lp.rejected_tokens.clamp(min=1)
    return ((chosen - rejected - 1 / (2 * beta)) ** 2, *rewards(lp, beta))


LOSSES: dict[str, LossFn] = {
    "sigmoid": sigmoid_loss,
    "robust": robust_loss,
    "hinge": hinge_loss,
    "ipo": ipo_loss,
    "sigmoid_norm": variants.sigmoid_norm_loss,
    "exo_pair": variants.exo_pair_loss,
    "nca_pair": variants.nca_pair_loss,
    "bco_pair": variants.bco_pair_loss,
    "sppo_hard": variants.sppo_hard_loss,
    "aot": variants.aot_loss,
    "aot_unpaired": variants.aot_unpaired_loss,
    "apo_zero": variants.apo_zero_loss,
    "apo_down": variants.apo_down_loss,
    "discopop": variants.discopop_loss,
    "sft": variants.sft_loss,
    "simpo": simpo_loss,
    "orpo": orpo_loss,
    "kto": kto_loss,
    "apo_zero_unpaired": apo_zero_unpaired_loss,
}

# Losses that read ``label_smoothing``; elsewhere a non-zero value would be silently ignored, so it is refused.
USES_LABEL_SMOOTHING = frozenset({"robust", "exo_pair", "aot", "aot_unpaired", "simpo"})
# Losses that never read the reference: with these (plus, optionally, sft) no reference model is loaded.
# sft alone keeps one, for the rewards it reports (as TRL).
REFERENCE_FREE = frozenset({"simpo", "orpo"})
# Losses that also score the prompt tokens (``PairLogps.prompt``): ORPO's NLL, as TRL computes it.
SCORES_PROMPT = frozenset({"orpo"})
# Losses for unpaired rows (prompt, completion, label): ``lit_dpo.loss_unpaired``.
UNPAIRED = frozenset({"kto", "apo_zero_unpaired"})


def is_unpaired_loss(names: str | Sequence[str]) -> bool:
    return bool(UNPAIRED.intersection(loss_names(names)))


def loss_names(names: str | Sequence[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def needs_reference(names: str | Sequence[str]) -> bool:
    names = set(loss_names(names))
    return not (names & REFERENCE_FREE and names <= REFERENCE_FREE | {"sft"})


def get_loss(
    names: str | Sequence[str],
    label_smoothing: float = 0.0,
    weights: Sequence[float] | None = None,
    discopop_tau: float = 0.05,
    simpo_gamma: float = 0.5,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> LossFn:
    """The loss ``fn(lp, beta, label_smoothing)`` for one name or a weighted sum of several (as TRL's MPO).

    Options a chosen loss would silently ignore, or values it cannot take, are refused with ``InputError``.
    """
    names = loss_names(names)
    weights = [1.0] * len(names) if weights is None else list(weights)
    if not names or len(weights) != len(names):
        raise InputError(f"loss_weights needs one weight per loss_type: got {weights} for {names}")
    for name in names:
        _check(name, label_smoothing)
    if UNPAIRED.intersection(names) and len(names) > 1:
        raise InputError(
            f"{sorted(UNPAIRED.intersection(names))} work on unpaired rows and cannot be combined: {names}"
        )
    if label_smoothing and not USES_LABEL_SMOOTHING.intersection(names):
        raise InputError(
            f"label_smoothing={label_smoothing} has no effect with loss_type={','.join(names)!r}; "
            f"it is used by {sorted(USES_LABEL_SMOOTHING)} (TRL's convention: cDPO is loss_type='robust')"
        )
    unpaired = {"desirable_weight": desirable_weight, "undesirable_weight": undesirable_weight}
    options = {"discopop": {"tau": discopop_tau}, "simpo": {"gamma": simpo_gamma}, "kto": unpaired}
    options["apo_zero_unpaired"] = unpaired
    fns = [partial(LOSSES[n], **options.get(n, {})) for n in names]
    if len(fns) == 1 and weights[0] == 1.0:
        return fns[0]
    return partial(_weighted_sum, fns, weights)


def _check(name: str, label_smoothing: float) -> None:
    if name not in LOSSES:
        raise InputError(f"unknown loss_type {name!r}; choose one of {sorted(LOSSES)}")
    if name == "robust" and not 0.0 <= label_smoothing < 0.5:
        raise InputError(f"loss_type='robust' needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    if name == "exo_pair" and not 0.0 < label_smoothing < 1.0:
        raise InputError(
            f"loss_type='exo_pair' needs 0 < label_smoothing < 1 (the paper uses 1e-3), got {label_smoothing}"
        )


def _weighted_sum(
    fns: list[LossFn], weights: list[float], lp: PairLogps, beta: float, label_smoothing: float = 0.0
) -> LossOutput:
    """The weighted sum of the losses; the rewards are those of the first one."""
    outputs = [fn(lp, beta, label_smoothing) for fn in fns]
    losses = sum(w * out[0] for out, w in zip(outputs, weights))
    return (losses, *outputs[0][1:])
