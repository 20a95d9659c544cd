"""Collators: tokenized pairs -> one batch for a single forward over chosen and rejected.

Both layouts also carry ``weights`` ``(B,)``, each pair's weight in the metrics, ``ref_logps`` ``(2B,)`` when
the pairs carry cached reference log-probs (``lit_dpo.reference_cache``), and tell the module which
hidden states to score with the same three tensors, so the loss code is
layout-agnostic: ``score_index`` ``(M,)`` indexes the flattened ``(rows * T)`` hidden states, each of which
predicts ``score_target`` ``(M,)``, a completion token of sequence ``score_seq`` ``(M,)``: ``i`` for the
chosen completion of pair ``i``, ``B + i`` for its rejected one.

``prompt_index`` / ``prompt_target`` / ``prompt_seq`` do the same for the prompt tokens (all but the first) of
each pair, for the losses that also score the prompt (ORPO's NLL, as TRL computes it).

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


def pair_weights(examples: list[dict[str, Any]]) -> Tensor:
    """``(B,)`` metric weight of each pair: 0 for the copies that only even out ranks (see ``data.pad_for_ranks``)."""
    return torch.tensor([float(ex.get("weight", 1.0)) for ex in examples])


def cached_reference(examples: list[dict[str, Any]]) -> dict[str, Tensor]:
    """``{"ref_logps": (2B,)}``, chosen first, when every pair carries cached reference log-probs; else ``{}``."""
    if not examples or any("ref_logps" not in ex for ex in examples):
        return {}
    chosen, rejected = zip(*(ex["ref_logps"] for ex in examples))
    return {"ref_logps": torch.tensor(chosen + rejected, dtype=torch.float32)}


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
        prompt_seq = torch.tensor([i for i, ex in enumerate(examples) for _ in ex["prompt_ids"][1:]], dtype=torch.long)
        prompt_pos = torch.tensor([j for ex in examples for j in range(len(ex["prompt_ids"]) - 1)], dtype=torch.long)
        return {
            "input_ids": input_ids,  # (2B, T)
            "attention_mask": attention_mask,  # (2B, T)
            "labels": labels,  # (2B, T)
            "score_index": row * width + pos,
            "score_target": targets[row, pos],
            "score_seq": row,
            "prompt_index": prompt_seq * width + prompt_pos,  # chosen rows come first: row i is pair i
            "prompt_target": input_ids[prompt_seq, prompt_pos + 1],
            "prompt_seq": prompt_seq,
            "num_pairs": len(examples),
            "weights": pair_weights(examples),
            **cached_reference(examples),
        }


@dataclass
class SharedPrefixCollator:
    """Rows of ``[prompt, chosen, rejected]`` segments with a ``(rows, 1, T, T)`` boolean mask and ``position_ids``.

    With ``pack_length`` > 0, pairs are packed several to a row, rows of about ``pack_length`` tokens balanced
    longest-first, and the mask is block-diagonal: no padding between pairs, at the price of attention over
    the whole row (dense masks: keep rows short). With 0, one pair per row.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    pack_length: int = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        num_pairs = len(examples)
        lengths = [len(ex["prompt_ids"]) + len(ex["chosen_ids"]) + len(ex["rejected_ids"]) for ex in examples]
        rows = _balanced_rows(lengths, self.pack_length)
        width = _width([sum(lengths[i] for i in row) for row in rows], self.pad_to_multiple_of)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        segment = torch.full((len(rows), width), PAD, dtype=torch.long)
        pair = torch.full((len(rows), width), -1, dtype=torch.long)
        index, target, seq = [], [], []
        prompt_index, prompt_target, prompt_seq = [], [], []
        for r, row in enumerate(rows):
            col = 0  # where the next pair starts in this row
            for i in row:
                prompt, chosen, rejected = (
                    examples[i]["prompt_ids"],
                    examples[i]["chosen_ids"],
                    examples[i]["rejected_ids"],
                )
                p, c, n = len(prompt), len(chosen), lengths[i]
                span = slice(col, col + n)
                input_ids[r, span] = torch.tensor(prompt + chosen + rejected)
                position_ids[r, span] = torch.cat([torch.arange(p + c), torch.arange(p, n - c)])
                segment[r, span] = torch.tensor([PROMPT] * p + [CHOSEN] * c + [REJECTED] * (n - p - c))
                pair[r, span] = i
                # flat index of each scored token's predictor: the token before it in its own sequence, which
                # for the first rejected token is the last prompt token, not the last chosen one
                last_prompt = r * width + col + p - 1
                prompt_index += range(r * width + col, last_prompt)
                prompt_target += prompt[1:]
                prompt_seq += [i] * max(0, p - 1)
                for first, tokens, seq_id in (
                    (last_prompt + 1, chosen, i),
                    (last_prompt + 1 + c, rejected, num_pairs + i),
                ):
                    for j, token in enumerate(tokens):
                        if p == 0 and j == 0:
                            continue  # an empty prompt leaves the first token unpredicted, as when padded
                        index.append(last_prompt if j == 0 else first + j - 1)
                        target.append(token)
                        seq.append(seq_id)
                col += n
        return {
            "input_ids": input_ids,  # (rows, T)
            "attention_mask": shared_prefix_mask(segment, pair),  # (rows, 1, T, T)
            "position_ids": position_ids,  # (rows, T)
            "score_index": torch.tensor(index, dtype=torch.long),
            "score_target": torch.tensor(target, dtype=torch.long),
            "score_seq": torch.tensor(seq, dtype=torch.long),
            "prompt_index": torch.tensor(prompt_index, dtype=torch.long),
            "prompt_target": torch.tensor(prompt_target, dtype=torch.long),
            "prompt_seq": torch.tensor(prompt_seq, dtype=torch.long),
            "num_pairs": num_pairs,
            "weights": pair_weights(examples),
            **cached_reference(examples),
        }


def _balanced_rows(lengths: list[int], pack_length: int) -> list[list[int]]:
    """Pair indices per row: one pair a row, or ~``pack_length``-token rows filled longest pair first."""
    if pack_length <= 0:
        return [[i] for i in range(len(lengths))]
    num_rows = max(1, -(-sum(lengths) // pack_length))
    rows: list[list[int]] = [[] for _ in range(num_rows)]
    sizes = [0] * num_rows
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        shortest = sizes.index(min(sizes))
        rows[shortest].append(i)
        sizes[shortest] += lengths[i]
    return [sorted(row) for row in rows if row]


def shared_prefix_mask(segment: Tensor, pair: Tensor) -> Tensor:
    """Boolean attention mask ``(rows, 1, T, T)`` (True = may attend) from segment and pair ids ``(rows, T)``.

    Causal within each pair, except that rejected queries never see chosen keys; padding sees only itself
    (a fully masked row would make the softmax NaN).
    """
    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()  # (T, T)
    query, key = segment[:, :, None], segment[:, None, :]  # (rows, T, 1), (rows, 1, T)
    same_pair = pair[:, :, None] == pair[:, None, :]
    mask = causal & same_pair & (key != PAD) & (query != PAD) & ~((query == REJECTED) & (key == CHOSEN))
    mask |= torch.eye(width, dtype=torch.bool) & (query == PAD)
    return mask[:, None]


@dataclass
class UnpairedCollator:
    """Unpaired (KTO) examples as pairs for ``collate``: each completion, and a mismatched one for the KL term.

    Example i becomes the pair (prompt_i, completion_i, completion_{i-1}): the "rejected" slot holds the
    completion of the previous example in the batch (TRL's rotation by one), cut to fit ``max_length``, whose
    log-ratio estimates KL(policy || reference). ``desirable`` ``(B,)`` carries the labels.
    """

    collate: PaddedCollator | SharedPrefixCollator
    max_length: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        pairs = []
        for i, ex in enumerate(examples):
            mismatched = examples[i - 1]["completion_ids"]  # i = 0 takes the last one
            room = len(mismatched) if self.max_length is None else max(1, self.max_length - len(ex["prompt_ids"]))
            pair = {
                "prompt_ids": ex["prompt_ids"],
                "chosen_ids": ex["completion_ids"],
                "rejected_ids": mismatched[:room],
            }
            pairs.append(pair | ({"weight": ex["weight"]} if "weight" in ex else {}))
        batch = self.collate(pairs)
        batch["desirable"] = torch.tensor([bool(ex["label"]) for ex in examples])
        return batch
