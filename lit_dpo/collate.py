"""Collators: tokenized pairs -> one batch for a single forward over chosen and rejected.

Both layouts tell the module which hidden states to score with the same three tensors, so the loss code is
layout-agnostic: ``score_index`` ``(M,)`` indexes the flattened ``(rows * T)`` hidden states, each of which
predicts ``score_target`` ``(M,)``, a completion token of sequence ``score_seq`` ``(M,)``: ``i`` for the
chosen completion of pair ``i``, ``B + i`` for its rejected one.

- ``PaddedCollator``: 2B right-padded rows, chosen rows first (TRL's layout).
- ``SharedPrefixCollator`` (default): one row per pair, ``[prompt, chosen, rejected]``, with a block mask
  so the rejected tokens attend to the prompt but not to the chosen ones, and position ids restarting the
  rejected completion right after the prompt. The prompt is computed once instead of twice, and no row is
  padded to its partner's length (prefix sharing, arXiv 2410.20305).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3


def _width(lengths: list[int], multiple: int | None) -> int:
    width = max(lengths)
    return -(-width // multiple) * multiple if multiple else width


@dataclass
class PaddedCollator:
    """2B rows ``prompt + completion``, chosen first; ``labels`` ``(2B, T)`` is -100 on prompt and padding."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [(ex["prompt_ids"], ex[key]) for key in ("chosen_ids", "rejected_ids") for ex in examples]
        width = _width([len(p) + len(c) for p, c in rows], self.pad_to_multiple_of)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (prompt, completion) in enumerate(rows):
            end = len(prompt) + len(completion)
            input_ids[i, :end] = torch.tensor(prompt + completion)
            attention_mask[i, :end] = 1
            labels[i, len(prompt) : end] = input_ids[i, len(prompt) : end]
        targets = labels[:, 1:]  # position t predicts token t + 1
        row, pos = (targets != -100).nonzero(as_tuple=True)
        return {
            "input_ids": input_ids,  # (2B, T)
            "attention_mask": attention_mask,  # (2B, T)
            "labels": labels,  # (2B, T)
            "score_index": row * width + pos,
            "score_target": targets[row, pos],
            "score_seq": row,
            "num_pairs": len(examples),
        }


@dataclass
class SharedPrefixCollator:
    """B rows ``[prompt, chosen, rejected, pad]`` with a ``(B, 1, T, T)`` boolean mask and ``position_ids``."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        num_pairs = len(examples)
        lengths = [len(ex["prompt_ids"]) + len(ex["chosen_ids"]) + len(ex["rejected_ids"]) for ex in examples]
        width = _width(lengths, self.pad_to_multiple_of)
        input_ids = torch.full((num_pairs, width), self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((num_pairs, width), dtype=torch.long)
        segment = torch.full((num_pairs, width), PAD, dtype=torch.long)
        index, target, seq = [], [], []
        for i, ex in enumerate(examples):
            prompt, chosen, rejected = ex["prompt_ids"], ex["chosen_ids"], ex["rejected_ids"]
            p, c, r = len(prompt), len(chosen), len(rejected)
            input_ids[i, : p + c + r] = torch.tensor(prompt + chosen + rejected)
            position_ids[i, : p + c + r] = torch.cat([torch.arange(p + c), torch.arange(p, p + r)])
            segment[i, :p], segment[i, p : p + c], segment[i, p + c : p + c + r] = PROMPT, CHOSEN, REJECTED
            # each completion token is predicted by the token before it in its own sequence:
            # for the first rejected token that is the last prompt token, not the last chosen one
            for start, tokens, seq_id in ((p, chosen, i), (p + c, rejected, num_pairs + i)):
                for j, token in enumerate(tokens):
                    predictor = p - 1 if j == 0 else start + j - 1
                    if predictor >= 0:  # an empty prompt leaves the first token unpredicted, as when padded
                        index.append(i * width + predictor)
                        target.append(token)
                        seq.append(seq_id)
        return {
            "input_ids": input_ids,  # (B, T)
            "attention_mask": shared_prefix_mask(segment),  # (B, 1, T, T)
            "position_ids": position_ids,  # (B, T)
            "score_index": torch.tensor(index, dtype=torch.long),
            "score_target": torch.tensor(target, dtype=torch.long),
            "score_seq": torch.tensor(seq, dtype=torch.long),
            "num_pairs": num_pairs,
        }


def shared_prefix_mask(segment: Tensor) -> Tensor:
    """Boolean attention mask ``(B, 1, T, T)`` (True = may attend) from segment ids ``(B, T)``.

    Causal, except that rejected queries never see chosen keys, and padding sees only itself (a fully
    masked row would make the softmax NaN).
    """
    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()  # (T, T)
    query, key = segment[:, :, None], segment[:, None, :]  # (B, T, 1), (B, 1, T)
    mask = causal & (key != PAD) & (query != PAD) & ~((query == REJECTED) & (key == CHOSEN))
    mask |= torch.eye(width, dtype=torch.bool) & (query == PAD)
    return mask[:, None]
