"""Completion log-probs: per-token scores summed per sequence, and the four per-pair tensors losses read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from lit_dpo.token_scores import from_logits

LossOutput = tuple[Tensor, Tensor, Tensor]  # per-pair losses, chosen rewards, rejected rewards: each (B,)


@dataclass
class PairLogps:
    """Summed completion log-probs of B pairs under policy and reference, each ``(B,)``."""

    policy_chosen: Tensor
    policy_rejected: Tensor
    ref_chosen: Tensor
    ref_rejected: Tensor
    chosen_tokens: Tensor  # (B,) number of completion tokens, used by length-normalised losses
    rejected_tokens: Tensor
    prompt: Optional[Tensor] = None  # (B,) summed policy log-probs of the prompt tokens, for losses that score it
    prompt_tokens: Optional[Tensor] = None
    desirable: Optional[Tensor] = None  # (B,) bool, unpaired (KTO) batches: each example's label
    kl_reference: Optional[Tensor] = None  # () KTO's KL reference point, when averaged over ranks by the caller
    wpo_weights: Optional[Tensor] = None  # (B,) WPO's per-pair loss weights (``wpo_weights``), no gradient

    @property
    def chosen_logratios(self) -> Tensor:
        return self.policy_chosen - self.ref_chosen

    @property
    def rejected_logratios(self) -> Tensor:
        return self.policy_rejected - self.ref_rejected


def completion_logps(
    logits: Tensor, targets: Tensor, seq_index: Tensor, num_seqs: int, token_weights: Optional[Tensor] = None
) -> tuple[Tensor, Tensor]:
    """Sum per-token log-probs into per-sequence log-probs.

    ``logits`` is ``(M, V)`` for the M scored completion positions (already shifted: row m predicts
    ``targets[m]``), ``seq_index`` ``(M,)`` says which of the ``num_seqs`` sequences each row belongs to,
    ``token_weights`` ``(M,)`` (default 1) weighs each token in the sum.
    Returns ``(sum_logps, num_tokens)``, both ``(num_seqs,)``.
    """
    return sum_per_sequence(from_logits(logits, targets).logps, seq_index, num_seqs, token_weights)


def sum_per_sequence(
    token_values: Tensor, seq_index: Tensor, num_seqs: int, token_weights: Optional[Tensor] = None
) -> tuple[Tensor, Tensor]:
    """Per-sequence sums ``(num_seqs,)`` of per-token values ``(M,)`` (weighted), and token counts."""
    if token_weights is not None:
        token_values = token_values * token_weights
    sums = token_values.new_zeros(num_seqs).index_add(0, seq_index, token_values)
    counts = torch.bincount(seq_index, minlength=num_seqs).to(sums.dtype)
    return sums, counts


def mean_per_sequence(token_values: Tensor, seq_index: Tensor, num_seqs: int) -> Tensor:
    """Per-sequence means ``(num_seqs,)`` of per-token values ``(M,)``; 0 for a sequence without tokens."""
    sums, counts = sum_per_sequence(token_values, seq_index, num_seqs)
    return sums / counts.clamp(min=1)


@torch.no_grad()
def wpo_logps(logits: Tensor, targets: Tensor, seq_index: Tensor, num_seqs: int) -> Tensor:
    """WPO (Zhou et al. 2024, eq. 2): per sequence ``(num_seqs,)``, the mean over its tokens of
    ``log p(token) - log sum_v p(v)^2``; ``exp`` of it weighs off-policy pairs down. No gradient."""
    return mean_per_sequence(from_logits(logits, targets, wpo=True).wpo, seq_index, num_seqs)


def length_desensitized_weights(seq_index: Tensor, num_pairs: int, ld_alpha: float) -> Tensor:
    """LD-DPO (Liu et al. 2024) token weights ``(M,)``: 1 for the first ``min(len_chosen, len_rejected)`` tokens
    of each completion, ``ld_alpha`` after them (the "verbose" tail); 1 for sequences past the 2B completions.

    Each sequence's tokens must be contiguous and in order in ``seq_index`` (as ``lit_dpo.collate`` lays them).
    """
    num_seqs = max(2 * num_pairs, int(seq_index.max()) + 1 if seq_index.numel() else 0)
    counts = torch.bincount(seq_index, minlength=num_seqs)
    shared = torch.minimum(counts[:num_pairs], counts[num_pairs : 2 * num_pairs]).repeat(2)  # (2B,)
    shared = torch.cat([shared, counts[2 * num_pairs :]])  # other sequences: every token "shared"
    flat = torch.arange(seq_index.numel(), device=seq_index.device)
    first = torch.full((num_seqs,), seq_index.numel(), device=seq_index.device).scatter_reduce(
        0, seq_index, flat, "amin"
    )
    position = flat - first[seq_index]  # 0-based position within its own sequence
    return torch.where(position < shared[seq_index], 1.0, ld_alpha)


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


def rewards(lp: PairLogps, beta: float) -> tuple[Tensor, Tensor]:
    """Implicit rewards ``beta * (pi - ref)`` of chosen and rejected, detached, each ``(B,)``."""
    return beta * lp.chosen_logratios.detach(), beta * lp.rejected_logratios.detach()
