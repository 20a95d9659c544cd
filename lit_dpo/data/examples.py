"""The examples a data module trains or validates on, read on demand from the sources' stores: a sequence that
holds positions into memory-mapped files, not token ids, so a million rows cost megabytes."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, replace
from typing import Sequence, Union, overload

import numpy as np

from lit_dpo.data.store import ExampleStore, example_digest
from lit_dpo.data.tokenize import Example


@dataclass(frozen=True)
class Part:
    """The rows one source gives a stage: ``positions`` in its store, in order (repeats allowed)."""

    store: ExampleStore
    positions: np.ndarray  # (n,) int64
    source: int  # index into the data module's source names


class Examples(Sequence[Example]):
    """The parts' examples in order, numbered from ``first`` (``Example.index``)."""

    def __init__(self, parts: list[Part], first: int = 0) -> None:
        self.parts, self.first = parts, first
        self._starts = np.cumsum([0] + [len(part.positions) for part in parts])

    def __len__(self) -> int:
        return int(self._starts[-1])

    @overload
    def __getitem__(self, i: int) -> Example: ...
    @overload
    def __getitem__(self, i: slice) -> list[Example]: ...
    def __getitem__(self, i: Union[int, slice]) -> Union[Example, list[Example]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        part = self.parts[k]
        example = part.store.example(int(part.positions[i - self._starts[k]]))
        return replace(example, source=part.source, index=self.first + i)

    def digests(self) -> np.ndarray:
        """(len,) uint64: each example's ``example_digest``, in order."""
        parts = [part.store.column("digest")[part.positions] for part in self.parts]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)

    @functools.cached_property
    def _fingerprint(self) -> str:
        digest = hashlib.sha256(b"lit_dpo examples 2")
        for part in self.parts:
            digest.update(np.int64(part.source).tobytes())
            digest.update(part.store.column("digest")[part.positions].tobytes())
        return digest.hexdigest()

    def fingerprint(self) -> str:
        """SHA-256 of the examples in order: their token ids (by digest), labels and sources (computed once:
        every checkpoint records it)."""
        return self._fingerprint


def digests(examples: Sequence[Example]) -> np.ndarray:
    """(len,) uint64 ``example_digest`` of each example: read from the stores, or computed."""
    if isinstance(examples, Examples):
        return examples.digests()
    return np.array([example_digest(ex) for ex in examples], dtype=np.uint64)


class Padded(Sequence[Example]):
    """``examples`` followed by weight-0 copies of their first ``copies`` (``pad_for_ranks``)."""

    def __init__(self, examples: Sequence[Example], copies: int) -> None:
        self.examples, self.copies = examples, copies

    def __len__(self) -> int:
        return len(self.examples) + self.copies

    def __getitem__(self, i: int) -> Example:  # type: ignore[override]
        if not 0 <= i < len(self):
            raise IndexError(i)
        n = len(self.examples)
        return self.examples[i] if i < n else replace(self.examples[(i - n) % n], weight=0.0)


def pad_for_ranks(examples: Sequence[Example], world_size: int) -> Sequence[Example]:
    """Pad to a multiple of ``world_size`` with weight-0 copies, so every rank runs as many batches (collectives
    in the forward, as under FSDP, must match) and the sampler repeats nothing: metrics count each pair once."""
    missing = -len(examples) % world_size
    return Padded(examples, missing) if missing and len(examples) else examples
