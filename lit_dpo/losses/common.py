"""What every loss shares: its output, the spec that says what it needs, and the formulas several use.

A loss is a pure function ``fn(lp, beta, **options) -> LossOutput``: per-pair losses that the caller reduces,
and implicit rewards, detached. Its options are keyword arguments named like the ``DPOModule`` options that
set them (``label_smoothing``, ``discopop_tau``, ...), with TRL's defaults.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Literal, Mapping, NamedTuple

import torch.nn.functional as F
from torch import Tensor

from lit_dpo.scoring.logps import PairLogps


class LossOutput(NamedTuple):
    losses: Tensor  # (B,) per pair (or per unpaired example)
    chosen_rewards: Tensor  # (B,) detached
    rejected_rewards: Tensor  # (B,) detached


@dataclass(frozen=True)
class Between:
    """The values an option may take: ``low <= x < high`` by default; ``hint`` ends the error message."""

    low: float
    high: float
    low_inclusive: bool = True
    high_inclusive: bool = False
    hint: str = ""

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_inclusive else value > self.low
        below = value <= self.high if self.high_inclusive else value < self.high
        return above and below

    def describe(self, name: str) -> str:
        low, high = ("<=" if self.low_inclusive else "<"), ("<=" if self.high_inclusive else "<")
        return f"{self.low:g} {low} {name} {high} {self.high:g}" + (f" ({self.hint})" if self.hint else "")


@dataclass(frozen=True)
class LossSpec:
    """A loss and what it needs, so that callers ask the spec instead of keeping lists of names.

    ``reference``: ``needed`` (the loss reads the reference), ``free`` (never: SimPO, ORPO), or ``rewards`` (only
    for the rewards it reports: sft, which needs none next to a reference-free loss). ``scores_prompt``: the
    loss also reads the prompt tokens' log-probs (``PairLogps.prompt``). ``unpaired``: it takes unpaired rows
    (``UnpairedLogps``). ``limits``: allowed values of its options. Its options are its keyword arguments.
    """

    fn: Callable[..., LossOutput]
    reference: Literal["needed", "free", "rewards"] = "needed"
    scores_prompt: bool = False
    unpaired: bool = False
    limits: Mapping[str, Between] = field(default_factory=dict)

    @cached_property
    def options(self) -> dict[str, object]:
        """The options this loss reads, with their defaults."""
        parameters = list(inspect.signature(self.fn).parameters.values())[2:]  # after (lp, beta)
        return {p.name: p.default for p in parameters}


def rewards(lp: PairLogps, beta: float) -> tuple[Tensor, Tensor]:
    """Implicit rewards ``beta * (pi - ref)`` of chosen and rejected, detached, each ``(B,)``."""
    return beta * lp.chosen_logratios.detach(), beta * lp.rejected_logratios.detach()


def length_averaged(values: Tensor, tokens: Tensor) -> Tensor:
    """Per-sequence sums divided by their token counts (a sequence without tokens stays at its sum, 0)."""
    return values / tokens.clamp(min=1)


def preference_logits(lp: PairLogps, average: bool = False) -> Tensor:
    """The DPO logit ``h = (pi_c - ref_c) - (pi_r - ref_r)``, on summed or length-averaged log-ratios."""
    if average:
        return length_averaged(lp.chosen_logratios, lp.chosen_tokens) - length_averaged(
            lp.rejected_logratios, lp.rejected_tokens
        )
    return lp.chosen_logratios - lp.rejected_logratios


def smoothed_sigmoid_loss(x: Tensor, label_smoothing: float) -> Tensor:
    """``-logsigmoid(x)`` with labels flipped with probability ``label_smoothing`` (cDPO's form)."""
    return -F.logsigmoid(x) * (1 - label_smoothing) - F.logsigmoid(-x) * label_smoothing
