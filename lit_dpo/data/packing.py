"""Which examples share a row of a batch, and what they share: the packing of ``SharedPrefixCollator``
(``lit_dpo.data.collate``) and of the memory plan (``lit_dpo.planning``)."""

from __future__ import annotations

import heapq
from typing import Optional


def row_width(lengths: list[int], multiple: Optional[int]) -> int:
    width = max(lengths)
    return -(-width // multiple) * multiple if multiple else width


def pack_rows(lengths: list[int], pack_length: int, multiple: Optional[int] = None) -> list[list[int]]:
    """Example indices per row: one example a row (``pack_length`` 0), or rows filled longest example first.

    Padding costs as much as a real token in every matmul, so of the row counts whose rows stay within
    ``pack_length`` tokens (or the longest example, if longer), the one that computes the fewest tokens, padding
    included (rows x width, widths rounded up to ``multiple``); the fewest rows among equals. Filling
    ``ceil(total / pack_length)`` rows instead put four examples of 336-420 tokens in three rows of 696: 2,088
    tokens computed for 1,496, where four rows of 420 compute 1,680.
    """
    if pack_length <= 0:
        return [[i] for i in range(len(lengths))]
    limit, narrowest = max(pack_length, *lengths), row_width([max(lengths)], multiple)
    best: tuple[float, list[list[int]]] = (float("inf"), [])
    for count in range(-(-sum(lengths) // limit), len(lengths) + 1):
        if count * narrowest >= best[0]:
            break  # more rows cannot compute fewer tokens: each is at least the longest example wide
        rows, sizes = _filled(lengths, count)
        computed = count * row_width(sizes, multiple)
        if max(sizes) <= limit and computed < best[0]:
            best = (computed, rows)
    return best[1]


def _filled(lengths: list[int], count: int) -> tuple[list[list[int]], list[int]]:
    """``count`` rows filled longest example first, each into the row with the fewest tokens so far."""
    rows: list[list[int]] = [[] for _ in range(count)]
    heap = [(0, r) for r in range(count)]  # (tokens so far, row)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        size, r = heapq.heappop(heap)
        rows[r].append(i)
        heapq.heappush(heap, (size + lengths[i], r))
    return [sorted(row) for row in rows], [size for size, _ in heap]


def common_start(prompts: list[list[int]]) -> int:
    """How many tokens all ``prompts`` start with: 0 for a lone prompt (nothing to share)."""
    if len(prompts) < 2:
        return 0
    shortest = min(prompts, key=len)
    for n, token in enumerate(shortest):
        if any(prompt[n] != token for prompt in prompts):
            return n
    return len(shortest)
