"""Implicit-reward metrics, named as TRL and torchtune log them.

``pair_metrics`` and ``unpaired_metrics`` are pure: per-pair values from one batch. ``PreferenceMetrics`` accumulates them with
torchmetrics so that ``compute()`` is the exact mean over every pair seen, across batches and, through
torchmetrics' sync, across DDP ranks.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn import ModuleDict
from torchmetrics import MeanMetric, Metric

from lit_dpo.losses import LossOutput
from lit_dpo.scoring.logps import Logps, PairLogps, UnpairedLogps

# Per-pair metrics, in the order they are logged.
PAIR_METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "ref_logps/chosen",
    "ref_logps/rejected",
    "kl",
)
# Per-token metrics: mean over the vocabulary of the logits, averaged over every completion token as TRL does.
TOKEN_METRICS = ("logits/chosen", "logits/rejected")


def pair_metrics(lp: PairLogps, output: LossOutput) -> dict[str, Tensor]:
    """Per-pair metric values, each ``(B,)`` and detached.

    ``kl``, logged when there is a reference, estimates KL(policy || reference) per completion as its summed
    log-ratio ``pi - ref``, averaged over chosen and rejected (the k1 estimator that TRL's online trainers log
    as ``objective/kl``; unbiased for completions sampled from the policy, so best read on on-policy data).
    """
    chosen_rewards, rejected_rewards = output.chosen_rewards, output.rejected_rewards
    values = {
        "loss": output.losses.detach(),
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "logps/chosen": lp.policy_chosen.detach(),
        "logps/rejected": lp.policy_rejected.detach(),
    }
    if lp.has_reference:  # the reference's too: a policy whose chosen log-probs fall below them is displacing
        values["ref_logps/chosen"], values["ref_logps/rejected"] = lp.ref_chosen.detach(), lp.ref_rejected.detach()
        values["kl"] = 0.5 * (lp.chosen_logratios + lp.rejected_logratios).detach()
    return values


def unpaired_metrics(lp: UnpairedLogps, output: LossOutput) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-example ``(value, weight)`` of an unpaired (KTO) batch, as TRL's KTOTrainer logs them: rewards/ and
    logps/ "chosen" average the desirable completions, "rejected" the undesirable ones; ``kl`` the mismatched
    completions' log-ratio; margins are chosen - rejected (``PreferenceMetrics.compute``); no accuracies."""
    desirable = lp.desirable.to(output.losses.dtype)
    every = torch.ones_like(desirable)
    return {
        "loss": (output.losses.detach(), every),
        "rewards/chosen": (output.chosen_rewards, desirable),
        "rewards/rejected": (output.chosen_rewards, 1 - desirable),
        "logps/chosen": (lp.policy.detach(), desirable),
        "logps/rejected": (lp.policy.detach(), 1 - desirable),
        "kl": (lp.kl_logratios.detach(), every),
    }


def _logit_sums_and_tokens(lp: Logps) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Per pair, for logits/chosen and logits/rejected: the summed vocabulary-mean logits and the token counts."""
    if isinstance(lp, UnpairedLogps):  # both from the completions, split by label
        split = lp.desirable.to(lp.logit_sums)
        return (lp.logit_sums, lp.logit_sums), (lp.tokens * split, lp.tokens * (1 - split))
    return (lp.chosen_logit_sums, lp.rejected_logit_sums), (lp.chosen_tokens, lp.rejected_tokens)


class PreferenceMetrics(torch.nn.Module):
    """Running means of the reward metrics; one instance per stage (train, val)."""

    def __init__(self) -> None:
        super().__init__()
        # ModuleDict keys may not contain "/", so the metric names are mapped
        self.means: ModuleDict = ModuleDict({_key(n): MeanMetric() for n in PAIR_METRICS + TOKEN_METRICS})

    def update(self, lp: Logps, output: LossOutput, weights: Optional[Tensor] = None) -> None:
        """Add one batch: its per-pair log-probs and the loss's output; ``weights`` ``(B,)`` (default 1) lets
        padding pairs count for nothing."""
        values = unpaired_metrics(lp, output) if isinstance(lp, UnpairedLogps) else pair_metrics(lp, output)
        sums, counts = _logit_sums_and_tokens(lp)
        weights = torch.ones(sums[0].shape[0], device=sums[0].device) if weights is None else weights.to(sums[0])
        for name, value in values.items():
            value, weight = value if isinstance(value, tuple) else (value, torch.ones_like(value))
            self.means[_key(name)].update(value, weight=weight * weights.to(value))
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


class SourceMetrics(torch.nn.Module):
    """``PreferenceMetrics`` of each data source, when validation mixes several: ``<source>/<metric>``."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: dict[str, int] = {}  # name -> the source id batches carry (``Batch.sources``)
        self.metrics = torch.nn.ModuleList()

    def track(self, sources: dict[str, int]) -> None:
        """Follow these sources (once: a second call, as on a second fit, changes nothing)."""
        if len(sources) > 1 and not self.sources:
            self.sources = dict(sources)
            self.metrics.extend(PreferenceMetrics() for _ in sources)

    def update(self, lp: Logps, output: LossOutput, weights: Tensor, sources: Tensor) -> None:
        for source, metrics in zip(self.sources.values(), self.metrics):
            metrics.update(lp, output, weights * (sources == source))

    def compute_and_reset(self) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        for name, metrics in zip(self.sources, self.metrics):
            values |= {f"{name}/{k}": v for k, v in metrics.compute().items()}
            metrics.reset()
        return values


def _key(name: str) -> str:
    return name.replace("/", "__")
