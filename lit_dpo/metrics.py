"""Implicit-reward metrics, named as TRL and torchtune log them.

``pair_metrics`` is pure: per-pair values from one batch. ``PreferenceMetrics`` accumulates them with
torchmetrics so that ``compute()`` is the exact mean over every pair seen, across batches and, through
torchmetrics' sync, across DDP ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import ModuleDict
from torchmetrics import MeanMetric, Metric

from lit_dpo.logps import PairLogps

# Per-pair metrics, in the order they are logged.
PAIR_METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "kl",
)
# Per-token metrics: mean over the vocabulary of the logits, averaged over every completion token as TRL does.
TOKEN_METRICS = ("logits/chosen", "logits/rejected")


def pair_metrics(
    losses: Tensor, chosen_rewards: Tensor, rejected_rewards: Tensor, lp: PairLogps, with_reference: bool = True
) -> dict[str, Tensor]:
    """Per-pair metric values, each ``(B,)`` and detached.

    ``kl``, logged when there is a reference, estimates KL(policy || reference) per completion as its summed
    log-ratio ``pi - ref``, averaged over chosen and rejected (the k1 estimator that TRL's online trainers log
    as ``objective/kl``; unbiased for completions sampled from the policy, so best read on on-policy data).
    """
    values = {
        "loss": losses.detach(),
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "logps/chosen": lp.policy_chosen.detach(),
        "logps/rejected": lp.policy_rejected.detach(),
    }
    if with_reference:
        values["kl"] = 0.5 * (lp.chosen_logratios + lp.rejected_logratios).detach()
    return values


def unpaired_metrics(losses: Tensor, rewards: Tensor, lp: PairLogps) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-example ``(value, weight)`` of an unpaired (KTO) batch, as TRL's KTOTrainer logs them: rewards/ and
    logps/ "chosen" average the desirable completions, "rejected" the undesirable ones; ``kl`` the mismatched
    completions' log-ratio; margins are chosen - rejected (``PreferenceMetrics.compute``); no accuracies."""
    desirable = lp.desirable.to(losses.dtype)
    every = torch.ones_like(desirable)
    return {
        "loss": (losses.detach(), every),
        "rewards/chosen": (rewards, desirable),
        "rewards/rejected": (rewards, 1 - desirable),
        "logps/chosen": (lp.policy_chosen.detach(), desirable),
        "logps/rejected": (lp.policy_chosen.detach(), 1 - desirable),
        "kl": (lp.rejected_logratios.detach(), every),
    }


class PreferenceMetrics(torch.nn.Module):
    """Running means of the reward metrics; one instance per stage (train, val)."""

    def __init__(self) -> None:
        super().__init__()
        # ModuleDict keys may not contain "/", so the metric names are mapped
        self.means: ModuleDict = ModuleDict({_key(n): MeanMetric() for n in PAIR_METRICS + TOKEN_METRICS})

    def update(
        self,
        values: dict[str, Tensor | tuple[Tensor, Tensor]],
        logit_sums: Tensor,
        token_counts: Tensor,
        weights: Tensor | None = None,
        desirable: Tensor | None = None,
    ) -> None:
        """Add one batch.

        ``values`` comes from ``pair_metrics`` (or, with per-example weights, ``unpaired_metrics``);
        ``logit_sums`` ``(2B,)`` is, per sequence (chosen rows first), the sum over its completion tokens of the
        vocabulary-mean logit, ``token_counts`` ``(2B,)`` their number; ``weights`` ``(B,)`` (default 1) lets
        padding pairs count for nothing. ``desirable`` ``(B,)``, for unpaired batches, splits the B completions
        (the first half of the sequences) into logits/chosen and logits/rejected.
        """
        batch = logit_sums.shape[0] // 2
        weights = torch.ones(batch, device=logit_sums.device) if weights is None else weights.to(logit_sums)
        for name, value in values.items():
            value, weight = value if isinstance(value, tuple) else (value, torch.ones_like(value))
            self.means[_key(name)].update(value, weight=weight * weights.to(value))
        sums, counts = logit_sums.chunk(2), token_counts.chunk(2)
        if desirable is not None:  # both from the completions, split by label
            split = desirable.to(logit_sums)
            sums, counts = (sums[0], sums[0]), (counts[0] * split, counts[0] * (1 - split))
        for name, total, count in zip(TOKEN_METRICS, sums, counts):
            # weighted mean: sum(value * weight) / sum(weight) == total logits / total tokens
            self.means[_key(name)].update(total / count.clamp(min=1), weight=count * weights)

    def compute(self) -> dict[str, Tensor]:
        """The mean of every metric that was updated (``kl`` is absent without a reference)."""
        names = [n for n in PAIR_METRICS + TOKEN_METRICS if self.means[_key(n)].update_count]
        values = {name: self.means[_key(name)].compute() for name in names}
        if "rewards/margins" not in values and "rewards/chosen" in values:  # unpaired: a difference of means
            values["rewards/margins"] = values["rewards/chosen"] - values["rewards/rejected"]
        return values

    def reset(self) -> None:
        metric: Metric
        for metric in self.means.values():
            metric.reset()

    @property
    def has_updates(self) -> bool:
        return bool(self.means[_key("loss")].update_count)


def _key(name: str) -> str:
    return name.replace("/", "__")
