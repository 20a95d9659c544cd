"""One forward of a model over a batch of ``lit_dpo.collate``, scoring only the completion tokens."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, NamedTuple, Optional

import torch
from torch import Tensor

from lit_dpo.errors import InputError
from lit_dpo.logps import completion_logps, length_desensitized_weights, wpo_logps


class Scores(NamedTuple):
    logps: Tensor  # (S,) summed (or LD-weighted) completion log-probs
    tokens: Tensor  # (S,) completion tokens
    logit_sums: Tensor  # (S,) sum over the completion tokens of the vocabulary-mean logit
    wpo_logps: Optional[Tensor] = None  # (S,) see ``lit_dpo.logps.wpo_logps``, when asked for


def score(
    model: torch.nn.Module,
    batch: dict[str, Any],
    with_prompt: bool = False,
    ld_alpha: Optional[float] = None,
    wpo: bool = False,
) -> Scores:
    """Per-sequence scores of a batch: S = 2B sequences, the B chosen completions, then the B rejected ones.

    Only the scored positions go through the LM head: the ``(rows, T, V)`` logits never exist.
    ``with_prompt`` scores the prompts too, as sequences ``2B..3B-1`` (S = 3B); ``ld_alpha`` weighs each
    completion's tokens past the shorter one's length (LD-DPO); ``wpo`` adds the WPO per-sequence means.
    """
    index, targets, seqs = batch["score_index"], batch["score_target"], batch["score_seq"]
    num_seqs = 2 * batch["num_pairs"]
    if with_prompt:
        index = torch.cat([index, batch["prompt_index"]])
        targets = torch.cat([targets, batch["prompt_target"]])
        seqs = torch.cat([seqs, batch["prompt_seq"] + num_seqs])
        num_seqs += batch["num_pairs"]
    with head_on_positions(model, index):
        logits = model(**_model_inputs(model, batch), use_cache=False).logits  # (M, V)
    weights = None if ld_alpha is None else length_desensitized_weights(seqs, batch["num_pairs"], ld_alpha)
    sums, counts = completion_logps(logits, targets, seqs, num_seqs, weights)
    logit_sums = sums.new_zeros(num_seqs).index_add(0, seqs, logits.detach().float().mean(-1))
    return Scores(sums, counts, logit_sums, wpo_logps(logits, targets, seqs, num_seqs) if wpo else None)


@contextlib.contextmanager
def head_on_positions(model: torch.nn.Module, index: Tensor) -> Iterator[None]:
    """Make the LM head project only the flat positions ``index`` of its ``(rows, T, H)`` input, giving ``(M, V)``.

    The model's own forward still runs (so FSDP gathers its parameters, and softcapping or logit scaling after
    the head apply as usual), but the ``(rows, T, V)`` logits are never built.
    """
    head = model.get_output_embeddings()
    project = head.forward
    head.forward = lambda hidden: project(hidden.flatten(0, 1)[index])
    try:
        yield
    finally:
        del head.forward  # back to the class's forward


def _model_inputs(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
    """The forward's keyword arguments for either batch layout of ``lit_dpo.collate``."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if "position_ids" not in batch:  # padded layout: a (2B, T) padding mask
        return inputs
    inputs["position_ids"] = batch["position_ids"]  # shared-prefix layout: a (B, 1, T, T) boolean mask
    attention = model.config._attn_implementation
    if attention not in ("sdpa", "eager"):
        raise InputError(
            f"prefix sharing needs sdpa or eager attention, not {attention}: pass --data.prefix_sharing=false"
        )
    if attention == "eager":  # eager attention adds the mask to the scores
        blocked = torch.finfo(model.dtype).min
        inputs["attention_mask"] = torch.zeros_like(batch["attention_mask"], dtype=model.dtype).masked_fill(
            ~batch["attention_mask"], blocked
        )
    return inputs
