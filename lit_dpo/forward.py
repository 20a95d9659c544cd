"""One forward of a model over a batch of ``lit_dpo.collate``, scoring only the completion tokens."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, NamedTuple, Optional

import torch
from torch import Tensor

from lit_dpo import token_scores
from lit_dpo.errors import InputError
from lit_dpo.logps import length_desensitized_weights, mean_per_sequence, sum_per_sequence
from lit_dpo.token_scores import TokenScores, chunk_rows


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

    Only the scored positions go through the LM head: the ``(rows, T, V)`` logits never exist, and when the
    scored positions' ``(M, V)`` logits would be large, they are computed in chunks (``lit_dpo.token_scores``).
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
    with head_on_positions(model, index, targets, wpo) as scored:
        logits = model(**_model_inputs(model, batch), use_cache=False).logits  # (M, V), or (M, 0) when chunked
    tokens = scored["scores"] if "scores" in scored else token_scores.from_logits(logits, targets, wpo)
    weights = None if ld_alpha is None else length_desensitized_weights(seqs, batch["num_pairs"], ld_alpha)
    sums, counts = sum_per_sequence(tokens.logps, seqs, num_seqs, weights)
    logit_sums = sums.new_zeros(num_seqs).index_add(0, seqs, tokens.mean_logits)
    wpo_means = mean_per_sequence(tokens.wpo, seqs, num_seqs) if wpo else None
    return Scores(sums, counts, logit_sums, wpo_means)


# causal LMs whose forward returns the LM head's output as the logits, untouched (no softcapping or scaling after
# the head): for them the head may return per-token scores computed in chunks
PLAIN_HEAD_MODELS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}


def chunks_logits(model: torch.nn.Module, num_positions: int) -> bool:
    """Whether ``score`` computes the scored positions' log-probs in chunks for this model and batch."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps the model
    head = model.get_output_embeddings()
    name = type(base).__name__.removeprefix("FSDP")  # FSDP2's fully_shard subclasses the model's class
    plain = name in PLAIN_HEAD_MODELS and type(head) is torch.nn.Linear
    # below 4 chunks the (M, V) logits are small (fp32: under 256 MiB by default) and recomputing them in the
    # backward would cost time for little memory
    return plain and num_positions > 4 * chunk_rows(head.out_features)


@contextlib.contextmanager
def head_on_positions(
    model: torch.nn.Module, index: Tensor, targets: Tensor, wpo: bool = False
) -> Iterator[dict[str, TokenScores]]:
    """Make the LM head score only the flat positions ``index`` of its ``(rows, T, H)`` input against
    ``targets`` ``(M,)``; the scores land in the yielded dict under ``"scores"``.

    The model's own forward still runs (so FSDP gathers its parameters, and softcapping or logit scaling after
    the head apply to the ``(M, V)`` logits as usual); for the models of ``PLAIN_HEAD_MODELS`` with many
    positions the head instead computes the scores in chunks and returns an empty ``(M, 0)`` tensor.
    """
    head = model.get_output_embeddings()
    project, scored = head.forward, {}
    chunk = chunks_logits(model, index.numel())

    def forward(hidden: Tensor) -> Tensor:
        positions = hidden.flatten(0, 1)[index]  # (M, H)
        if chunk:
            scored["scores"] = token_scores.chunked(positions, head.weight, head.bias, targets, wpo)
            return positions.new_empty(positions.shape[0], 0)
        return project(positions)

    head.forward = forward
    try:
        yield scored
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
