"""Collators: tokenized examples -> one ``Batch``, a single forward over both completions of every example.

Each example puts two completions after its prompt: chosen and rejected for a ``Pair``; for an
``UnpairedExample`` (KTO) its completion and a mismatched one, the previous example's completion in the batch
(TRL's rotation by one), whose log-ratio estimates KL(policy || reference). Sequence ``i`` of a batch is the
first completion of example ``i``, sequence ``B + i`` its second.

- ``PaddedCollator``: 2B right-padded rows, first completions first (TRL's layout).
- ``SharedPrefixCollator`` (default): one row per example, ``[prompt, first, second]``, with a block mask so the
  second completion attends to the prompt but not to the first one, and position ids restarting it right after
  the prompt: the prompt is computed once and no row is padded to its partner's length (prefix sharing,
  arXiv 2410.20305). With ``pack_length``, several examples share a row under a block-diagonal mask, and the
  prompts' common start (a chat template's system prompt) is computed once at the row's start, seen by them all.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from lit_dpo.data.packing import common_start, pack_rows, row_width
from lit_dpo.data.tokenize import Example, Pair
from lit_dpo.data.vision import VisionInputs, vision_inputs

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3
SHARED = -2  # the example id of a row's shared prompt start (padding: -1)


class _Movable:
    """A dataclass of tensors that moves as one: Lightning calls ``batch.to(device)``."""

    def to(self, device: torch.device | str) -> "_Movable":
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        moved = {k: v.to(device) for k, v in values.items() if isinstance(v, (Tensor, _Movable))}
        return replace(self, **moved)  # type: ignore[type-var]


@dataclass
class Positions(_Movable):
    """Which hidden states to score: ``index`` ``(M,)`` into the flattened ``(rows * T)`` positions, each of which
    predicts ``target`` ``(M,)``, a token of sequence ``seq`` ``(M,)``."""

    index: Tensor
    target: Tensor
    seq: Tensor


@dataclass
class Batch(_Movable):
    """One forward's input over B examples' 2B completions, and which positions to score."""

    input_ids: Tensor  # (rows, T): 2B rows when padded, fewer with prefix sharing
    attention_mask: Tensor  # (2B, T) padding mask, or (rows, 1, T, T) boolean block mask (True = may attend)
    position_ids: Optional[Tensor]  # (rows, T) with prefix sharing; None when padded
    completions: Positions  # the completion tokens: sequence i for example i's first completion, B + i its second
    prompts: Positions  # the prompt tokens but the first of example i, as sequence i (ORPO's NLL scores them)
    weights: Tensor  # (B,) each example's weight in the metrics
    indices: Tensor  # (B,) each example's ``index``: the key of cached reference log-probs
    sources: Tensor  # (B,) each example's source (the data module's ``source_names``)
    desirable: Optional[Tensor] = None  # (B,) bool labels of unpaired (KTO) examples; None for pairs
    tokens: int = 0  # prompt and completion tokens of the examples (a count on the CPU, for throughput)
    positions: int = 0  # token positions the forward computes (prompts twice when padded): the rest is padding
    # (rows, T) with prefix sharing: example * 4 + PROMPT/CHOSEN/REJECTED, SHARED * 4 + PROMPT for a packed row's
    # shared prompt start, -1 for padding; what a FlexAttention block mask is built from (``lit_dpo.scoring.flex``)
    segments: Optional[Tensor] = None
    vision: Optional[VisionInputs] = None  # the prompts' images, for a vision-language model (``lit_dpo.data.vision``)

    @property
    def num_pairs(self) -> int:
        return self.weights.shape[0]

    @property
    def unpaired(self) -> bool:
        return self.desirable is not None


class _Layout(NamedTuple):
    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Optional[Tensor]
    completions: Positions
    prompts: Positions
    segments: Optional[Tensor] = None
    prompt_order: Sequence[int] = ()  # the examples whose prompts appear in the flattened rows, in that order
    positions: int = 0  # the positions that are not padding


Triple = tuple[list[int], list[int], list[int]]  # prompt, first completion, second completion


@dataclass
class _Collator:
    pad_token_id: int
    pad_to_multiple_of: Optional[int] = None
    max_length: Optional[int] = None  # unpaired examples: the mismatched completion is cut to fit
    image_processor: Any = None  # a vision-language model's: the examples' images become ``Batch.vision``

    def __call__(self, examples: Sequence[Example]) -> Batch:
        pairs = all(isinstance(ex, Pair) for ex in examples)
        triples = [_triple(examples, i, self.max_length) for i in range(len(examples))]
        with_images = any(ex.images for ex in examples)
        layout = self._lay_out(triples, share_prompts=not with_images)  # images go with each prompt: nothing shared
        vision = None
        if with_images:
            vision = vision_inputs(self.image_processor, [examples[i].images for i in layout.prompt_order])
        return Batch(
            *layout[:5],
            segments=layout.segments,
            vision=vision,
            weights=torch.tensor([float(ex.weight) for ex in examples]),
            indices=torch.tensor([ex.index for ex in examples], dtype=torch.long),
            sources=torch.tensor([ex.source for ex in examples], dtype=torch.long),
            desirable=None if pairs else torch.tensor([bool(ex.desirable) for ex in examples]),  # type: ignore[union-attr]
            tokens=sum(len(p) + len(a) + len(b) for p, a, b in triples),
            positions=layout.positions,
        )

    def _lay_out(self, triples: list[Triple], share_prompts: bool) -> _Layout:
        raise NotImplementedError


def _triple(examples: Sequence[Example], i: int, max_length: Optional[int]) -> Triple:
    example = examples[i]
    if isinstance(example, Pair):
        return example.prompt_ids, example.chosen_ids, example.rejected_ids
    mismatched = examples[i - 1].completion_ids  # type: ignore[union-attr]  # i = 0 takes the last one
    room = len(mismatched) if max_length is None else max(1, max_length - len(example.prompt_ids))
    return example.prompt_ids, example.completion_ids, mismatched[:room]


def _positions(index: list[int] | Tensor, target: list[int] | Tensor, seq: list[int] | Tensor) -> Positions:
    return Positions(*(torch.as_tensor(t, dtype=torch.long) for t in (index, target, seq)))


@dataclass
class PaddedCollator(_Collator):
    """2B rows ``prompt + completion``, first completions first, right-padded."""

    def _lay_out(self, triples: list[Triple], share_prompts: bool) -> _Layout:
        rows = [(prompt, seqs[k]) for k in (0, 1) for prompt, *seqs in triples]
        width = row_width([len(p) + len(c) for p, c in rows], self.pad_to_multiple_of)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        scored = torch.zeros((len(rows), width), dtype=torch.bool)  # completion tokens
        for i, (prompt, completion) in enumerate(rows):
            end = len(prompt) + len(completion)
            input_ids[i, :end] = torch.tensor(prompt + completion)
            attention_mask[i, :end] = 1
            scored[i, len(prompt) : end] = True
        row, pos = scored[:, 1:].nonzero(as_tuple=True)  # position t predicts token t + 1
        prompt_seq = [i for i, (prompt, _, _) in enumerate(triples) for _ in prompt[1:]]
        prompt_pos = torch.tensor([j for prompt, _, _ in triples for j in range(len(prompt) - 1)], dtype=torch.long)
        prompt_seq = torch.tensor(prompt_seq, dtype=torch.long)  # first-completion rows come first: row i is pair i
        completions = _positions(row * width + pos, input_ids[row, pos + 1], row)
        prompts = _positions(prompt_seq * width + prompt_pos, input_ids[prompt_seq, prompt_pos + 1], prompt_seq)
        return _Layout(input_ids, attention_mask, None, completions, prompts, prompt_order=[*range(len(triples))] * 2,
                       positions=int(attention_mask.sum()))  # fmt: skip


@dataclass
class SharedPrefixCollator(_Collator):
    """Rows of ``[prompt, first, second]`` segments with a ``(rows, 1, T, T)`` boolean mask and ``position_ids``.

    With ``pack_length`` > 0, examples are packed several to a row, rows of about ``pack_length`` tokens balanced
    longest-first, and the mask is block-diagonal: no padding between examples, at the price of attention over
    the whole row (dense masks: keep rows short). The tokens that all prompts of a row start with (a chat
    template's system prompt, a shared instruction, the same prompt twice) come once at the row's start, where
    every example of the row attends to them: causal attention makes their hidden states the same in every
    example, so the log-probs are too. With 0, one example per row.
    """

    pack_length: int = 0

    def _lay_out(self, triples: list[Triple], share_prompts: bool) -> _Layout:
        lengths = [sum(len(part) for part in triple) for triple in triples]
        rows = pack_rows(lengths, self.pack_length, self.pad_to_multiple_of)
        shared = [common_start([triples[i][0] for i in row]) if share_prompts else 0 for row in rows]
        sizes = [n + sum(lengths[i] - n for i in row) for n, row in zip(shared, rows)]
        width = row_width(sizes, self.pad_to_multiple_of)
        packed = _PackedRows(len(rows) * width, self.pad_token_id, len(triples))
        for r, row in enumerate(rows):
            prefix = packed.add_shared(r * width, triples[row[0]][0][: shared[r]])
            start = prefix.stop  # flat index where the next example starts
            for i in row:
                packed.add(i, start, *triples[i], prefix=prefix)
                start += lengths[i] - shared[r]
        return packed.layout(len(rows), width)._replace(prompt_order=[i for row in rows for i in row])


class _PackedRows:
    """Flat ``(rows * T)`` tokens, positions, segments and example ids, filled example by example, and the flat
    positions to score."""

    def __init__(self, size: int, pad_token_id: int, num_pairs: int) -> None:
        self.input_ids = torch.full((size,), pad_token_id, dtype=torch.long)
        self.position_ids = torch.zeros(size, dtype=torch.long)
        self.segment = torch.full((size,), PAD, dtype=torch.long)
        self.pair = torch.full((size,), -1, dtype=torch.long)
        self.num_pairs = num_pairs
        self.completions: tuple[list[int], list[int], list[int]] = ([], [], [])  # index, target, seq
        self.prompts: tuple[list[int], list[int], list[int]] = ([], [], [])

    def add_shared(self, start: int, tokens: list[int]) -> range:
        """A row's shared prompt start at flat index ``start``; its flat positions."""
        span = slice(start, start + len(tokens))
        self.input_ids[span] = torch.tensor(tokens, dtype=torch.long)
        self.position_ids[span] = torch.arange(len(tokens))
        self.segment[span] = PROMPT
        self.pair[span] = SHARED
        return range(span.start, span.stop)

    def add(self, i: int, start: int, prompt: list[int], chosen: list[int], rejected: list[int], prefix: range) -> None:
        """Example ``i`` from flat index ``start``, its prompt's first ``len(prefix)`` tokens being the row's shared
        ones at the flat positions ``prefix``."""
        own = prompt[len(prefix) :]
        p, c, r = len(prompt), len(chosen), len(rejected)
        span = slice(start, start + len(own) + c + r)
        self.input_ids[span] = torch.tensor(own + chosen + rejected, dtype=torch.long)
        self.position_ids[span] = torch.cat([torch.arange(len(prefix), p + c), torch.arange(p, p + r)])
        self.segment[span] = torch.tensor([PROMPT] * len(own) + [CHOSEN] * c + [REJECTED] * r)
        self.pair[span] = i
        prompt_at = [*prefix, *range(start, start + len(own))]  # flat position of each prompt token
        # each scored token's predictor is the token before it in its own sequence, which for the first rejected
        # token is the last prompt token, not the last chosen one
        for column, values in zip(self.prompts, (prompt_at[:-1], prompt[1:], [i] * max(0, p - 1))):
            column.extend(values)
        chosen_at = start + len(own)  # the first chosen token's flat position
        for first, tokens, seq in ((chosen_at, chosen, i), (chosen_at + c, rejected, self.num_pairs + i)):
            for j, token in enumerate(tokens):
                if p == 0 and j == 0:
                    continue  # an empty prompt leaves the first token unpredicted, as when padded
                for column, value in zip(self.completions, (prompt_at[-1] if j == 0 else first + j - 1, token, seq)):
                    column.append(value)

    def layout(self, rows: int, width: int) -> _Layout:
        segment, pair = self.segment.view(rows, width), self.pair.view(rows, width)
        return _Layout(
            self.input_ids.view(rows, width),
            shared_prefix_mask(segment, pair),
            self.position_ids.view(rows, width),
            _positions(*self.completions),
            _positions(*self.prompts),
            torch.where(segment == PAD, -1, pair * 4 + segment),
            positions=int((segment != PAD).sum()),
        )


def shared_prefix_mask(segment: Tensor, pair: Tensor) -> Tensor:
    """Boolean attention mask ``(rows, 1, T, T)`` (True = may attend) from segment and example ids ``(rows, T)``.

    Causal within each example and from each example to its row's shared prompt start (example id ``SHARED``),
    except that second-completion queries never see first-completion keys; padding sees only itself (a fully
    masked row would make the softmax NaN).
    """
    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()  # (T, T)
    query, key = segment[:, :, None], segment[:, None, :]  # (rows, T, 1), (rows, 1, T)
    same_pair = (pair[:, :, None] == pair[:, None, :]) | (pair[:, None, :] == SHARED)
    mask = causal & same_pair & (key != PAD) & (query != PAD) & ~((query == REJECTED) & (key == CHOSEN))
    mask |= torch.eye(width, dtype=torch.bool) & (query == PAD)
    return mask[:, None]
