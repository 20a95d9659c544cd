"""One forward of a model over a ``Batch``: per-sequence sums of the completion tokens' log-probs."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

from lit_dpo.data.collate import Batch
from lit_dpo.errors import InputError
from lit_dpo.hf import is_vision_config
from lit_dpo.scoring.blocked import BLOCKED_SDPA, BLOCKS_ARGUMENT, row_blocks
from lit_dpo.scoring.flex import block_mask
from lit_dpo.scoring.image_blocks import has_image_blocks, image_block_inputs
from lit_dpo.scoring.lm_head import head_on_positions, token_scores
from lit_dpo.scoring.mrope import multimodal_rope_inputs, uses_multimodal_rope


class SequenceScores(NamedTuple):
    logps: Tensor  # (S,) summed (or LD-weighted) log-probs of each sequence's tokens
    tokens: Tensor  # (S,) number of tokens scored
    logit_sums: Tensor  # (S,) sum over the tokens of the vocabulary-mean logit (TRL's logits/ metrics)
    wpo: Optional[Tensor] = None  # (S,) mean over the tokens of log p - log sum_v p(v)^2 (WPO), when asked for


def score_sequences(
    model: torch.nn.Module,
    batch: Batch,
    with_prompt: bool = False,
    ld_alpha: Optional[float] = None,
    wpo: bool = False,
) -> SequenceScores:
    """Scores of S = 2B sequences: the B first completions (chosen), then the B second ones (rejected).

    Only the scored positions go through the LM head: the ``(rows, T, V)`` logits never exist, and when the
    scored positions' ``(M, V)`` logits would be large, they are computed in chunks (``lit_dpo.scoring.lm_head``).
    ``with_prompt`` scores the prompts too, as sequences ``2B..3B-1`` (S = 3B); ``ld_alpha`` weighs each
    completion's tokens past the shorter one's length (LD-DPO); ``wpo`` adds the WPO per-sequence means.
    """
    scored, num_seqs = batch.completions, 2 * batch.num_pairs
    index, targets, seqs = scored.index, scored.target, scored.seq
    if with_prompt:
        index = torch.cat([index, batch.prompts.index])
        targets = torch.cat([targets, batch.prompts.target])
        seqs = torch.cat([seqs, batch.prompts.seq + num_seqs])
        num_seqs += batch.num_pairs
    with head_on_positions(model, index, targets, wpo) as chunked:
        logits = model(**_model_inputs(model, batch), use_cache=False).logits  # (M, V), or (M, 0) when chunked
    tokens = chunked["scores"] if "scores" in chunked else token_scores(logits, targets, wpo)
    weights = None if ld_alpha is None else length_desensitized_weights(seqs, batch.num_pairs, ld_alpha)
    sums, counts = sum_per_sequence(tokens.logps, seqs, num_seqs, weights)
    logit_sums = sums.new_zeros(num_seqs).index_add(0, seqs, tokens.mean_logits)
    wpo_means = mean_per_sequence(tokens.wpo, seqs, num_seqs) if wpo else None
    return SequenceScores(sums, counts, logit_sums, wpo_means)


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


def length_desensitized_weights(seq_index: Tensor, num_pairs: int, ld_alpha: float) -> Tensor:
    """LD-DPO (Liu et al. 2024) token weights ``(M,)``: 1 for the first ``min(len_chosen, len_rejected)`` tokens
    of each completion, ``ld_alpha`` after them (the "verbose" tail); 1 for sequences past the 2B completions.

    Each sequence's tokens must be contiguous and in order in ``seq_index`` (as ``lit_dpo.data.collate`` lays
    them out).
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


def _model_inputs(model: torch.nn.Module, batch: Batch) -> dict[str, Any]:
    """The forward's keyword arguments for either batch layout of ``lit_dpo.data.collate``."""
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if batch.vision is not None:  # a vision-language model's image inputs, in the layout's order
        inputs |= batch.vision.tensors
    elif is_vision_config(model.config) and bool((batch.input_ids == model.config.image_token_id).any()):
        # some models would read the image tokens as text: a data module that left the images out says so here
        raise InputError("a batch holds image tokens but no images (Batch.vision): its examples lost their images")
    if batch.position_ids is not None:  # shared-prefix layout: a (rows, 1, T, T) boolean mask
        inputs["position_ids"] = batch.position_ids
    if uses_multimodal_rope(model.config):  # Qwen2-VL's family: 3 positions a token (``lit_dpo.scoring.mrope``)
        inputs |= multimodal_rope_inputs(model.config, batch)
    if has_image_blocks(model.config):  # Gemma 3: an image's tokens see each other (``lit_dpo.scoring.image_blocks``)
        inputs |= image_block_inputs(model.config, batch)
    if batch.position_ids is None:  # padded layout: a (2B, T) padding mask
        return inputs
    attention = model.config._attn_implementation
    if attention == "flex_attention":  # a block mask: the kernel skips the blocks prefix sharing masks out
        if has_image_blocks(model.config) and batch.vision is not None:
            raise InputError(f"{model.config.model_type}'s image blocks are not in lit_dpo's FlexAttention mask yet: "
                             "pass --model.attn_implementation=sdpa")  # fmt: skip
        inputs["attention_mask"] = block_mask(batch.segments)
        return inputs
    if attention == BLOCKED_SDPA:  # a CPU's sdpa, one example of a packed row at a time
        blocks = row_blocks(batch.segments)
        if blocks is not None:
            inputs[BLOCKS_ARGUMENT] = blocks
        return inputs
    if attention not in ("sdpa", "eager"):
        raise InputError(
            f"prefix sharing needs sdpa, eager or flex_attention attention, not {attention}: pass "
            "--data.prefix_sharing=false, or another --model.attn_implementation"
        )
    if attention == "eager":  # eager attention adds the mask to the scores
        allowed, blocked = inputs["attention_mask"], torch.finfo(model.dtype).min
        inputs["attention_mask"] = torch.zeros_like(allowed, dtype=model.dtype).masked_fill(~allowed, blocked)
    return inputs
