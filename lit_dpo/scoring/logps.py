"""Per-pair tensors: a batch's sequence scores under the policy and the reference, split into what losses and
metrics read, ``PairLogps`` for preference pairs and ``UnpairedLogps`` for unpaired (KTO) examples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

from lit_dpo.data.collate import Batch
from lit_dpo.scoring.forward import SequenceScores


@dataclass
class PairLogps:
    """Summed completion log-probs of B pairs under policy and reference, and what else losses and metrics read,
    each ``(B,)``."""

    policy_chosen: Tensor
    policy_rejected: Tensor
    ref_chosen: Optional[Tensor]  # None without a reference model (the reference-free losses never read it)
    ref_rejected: Optional[Tensor]
    chosen_tokens: Tensor  # number of completion tokens, for length-normalised losses
    rejected_tokens: Tensor
    prompt: Optional[Tensor] = None  # summed policy log-probs of the prompt tokens, for losses that score it
    prompt_tokens: Optional[Tensor] = None
    wpo_weights: Optional[Tensor] = None  # WPO's per-pair loss weights, no gradient
    chosen_logit_sums: Optional[Tensor] = None  # sum over the completion of the vocabulary-mean logit (metrics)
    rejected_logit_sums: Optional[Tensor] = None

    @property
    def has_reference(self) -> bool:
        return self.ref_chosen is not None

    @property
    def chosen_logratios(self) -> Tensor:
        """``pi - ref`` of the chosen completions; the policy's log-probs alone when there is no reference."""
        return self.policy_chosen if self.ref_chosen is None else self.policy_chosen - self.ref_chosen

    @property
    def rejected_logratios(self) -> Tensor:
        return self.policy_rejected if self.ref_rejected is None else self.policy_rejected - self.ref_rejected

    def terms(self) -> dict[str, Tensor]:
        """The log-probs by name, for messages about them."""
        terms = {"policy logps/chosen": self.policy_chosen, "policy logps/rejected": self.policy_rejected}
        if self.ref_chosen is not None and self.ref_rejected is not None:
            terms |= {"reference logps/chosen": self.ref_chosen, "reference logps/rejected": self.ref_rejected}
        return terms


@dataclass
class UnpairedLogps:
    """Summed log-probs of B unpaired examples, each ``(B,)``: each example's completion, and a mismatched one (another
    example's completion under this prompt), whose log-ratio estimates KL(policy || reference) as KTO uses it."""

    policy: Tensor
    ref: Tensor
    kl_policy: Tensor
    kl_ref: Tensor
    tokens: Tensor  # completion tokens
    desirable: Tensor  # bool labels
    logit_sums: Optional[Tensor] = None  # sum over the completion of the vocabulary-mean logit (metrics)
    reference_point: Optional[Tensor] = None  # () KTO's z0 over every rank's batch, when the caller computes it

    @property
    def logratios(self) -> Tensor:
        return self.policy - self.ref

    @property
    def kl_logratios(self) -> Tensor:
        return self.kl_policy - self.kl_ref

    def terms(self) -> dict[str, Tensor]:
        """The log-probs by name, for messages about them."""
        return {
            "policy logps/completion": self.policy,
            "policy logps/mismatched": self.kl_policy,
            "reference logps/completion": self.ref,
            "reference logps/mismatched": self.kl_ref,
        }


Logps = Union[PairLogps, UnpairedLogps]


def split_scores(policy: SequenceScores, reference: Optional[Tensor], batch: Batch) -> Logps:
    """The per-pair (or per-example) view of one batch: ``policy`` scored by ``score_sequences``, ``reference``
    the reference's ``(2B,)`` summed log-probs (None without a reference)."""
    num = batch.num_pairs
    logps, tokens, logit_sums = (t[: 2 * num].view(2, num) for t in policy[:3])  # (2, B): first, second
    ref = (None, None) if reference is None else reference.to(policy.logps.dtype).view(2, num)
    if batch.desirable is not None:
        return UnpairedLogps(logps[0], ref[0], logps[1], ref[1], tokens[0], batch.desirable, logit_sums[0])
    pairs = PairLogps(*logps, *ref, *tokens, chosen_logit_sums=logit_sums[0], rejected_logit_sums=logit_sums[1])
    if policy.logps.shape[0] > 2 * num:  # the prompts were scored too
        pairs.prompt, pairs.prompt_tokens = policy.logps[2 * num :], policy.tokens[2 * num :]
    if policy.wpo is not None:
        pairs.wpo_weights = torch.exp(policy.wpo[:num] + policy.wpo[num : 2 * num])
    return pairs
