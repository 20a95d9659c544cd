"""From stores to examples: hold some of a source's rows out, keep those the length limits left, and keep a
``SourceLog`` of what became of every row (for the one warning per source, the data report and the model card)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, TypeVar

import numpy as np

from lit_dpo.data.store import DROP_REASONS, IMAGE_COUNTS, KEPT, TRUNCATED, ExampleStore, Limits
from lit_dpo.errors import DataError

T = TypeVar("T")
Numbers = Sequence[int]  # row numbers: a list, or a NumPy array for a large source


@dataclass
class SourceLog:
    """What became of one source's rows in one stage (train or val)."""

    name: str
    path: str
    stage: str
    rows: int = 0  # rows read, dropped ones included
    truncated: Numbers = field(default_factory=list)  # row numbers
    dropped: dict[str, Numbers] = field(default_factory=dict)  # reason -> row numbers
    lengths: dict[str, Numbers] = field(default_factory=dict)  # prompt/chosen/... -> tokens before the limits
    sampled: int = 0  # examples a training set takes from it (``Source.weight`` / ``rows`` applied)

    @property
    def kept(self) -> int:
        return self.rows - sum(len(rows) for rows in self.dropped.values())

    def warning(self, limits: Limits) -> Optional[str]:
        """One line on what was truncated or dropped, with counts and the first row numbers; None if nothing."""
        by_length = {reason: rows for reason, rows in self.dropped.items() if reason in _LENGTH_REASONS}
        other = {reason: rows for reason, rows in self.dropped.items() if reason not in _LENGTH_REASONS}
        parts = []
        if len(self.truncated) or by_length:
            dropped = sum(len(rows) for rows in by_length.values())
            details = ([("truncated", self.truncated)] if len(self.truncated) else []) + list(by_length.items())
            parts.append(
                f"{len(self.truncated)} of {self.rows - _count(other)} pairs truncated and {dropped} dropped to fit "
                f"{limits} ({'; '.join(f'{what}: {row_list(rows)}' for what, rows in details)})"
            )
        if other:
            dropped = "; ".join(f"{reason}: {row_list(rows)}" for reason, rows in other.items())
            parts.append(f"{_count(other)} of {self.rows} rows dropped ({dropped})")
        return f"{self.path}: {'; '.join(parts)}" if parts else None


_LENGTH_REASONS = tuple(DROP_REASONS.values())


def held_out_positions(n: int, fraction: float, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The positions (sorted) of ``n`` rows to train on and to hold out: a fixed, seeded random ``fraction`` of
    them, the same on every rank and every run."""
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise DataError(f"{source}: {n} rows are too few to hold out val_split={fraction}")
    val = np.zeros(n, dtype=bool)
    val[np.random.default_rng(0).permutation(n)[:n_val]] = True
    return np.flatnonzero(~val), np.flatnonzero(val)


def hold_out(rows: Sequence[T], fraction: float, source: str) -> tuple[list[T], list[T]]:
    """``held_out_positions`` of a list: the rows to train on and those held out."""
    train, val = held_out_positions(len(rows), fraction, source)
    return [rows[i] for i in train], [rows[i] for i in val]


def kept_positions(store: ExampleStore, positions: np.ndarray, log: SourceLog) -> np.ndarray:
    """The positions among ``positions`` whose rows the length limits kept (whole or truncated); what became of
    the others goes into ``log``, with the tokens of every row before the limits."""
    status, numbers = store.column("status")[positions], store.column("row")[positions]
    log.truncated = numbers[status == TRUNCATED]
    for code, reason in DROP_REASONS.items():
        if (status == code).any():
            log.dropped[reason] = numbers[status == code]
    names = ("prompt", *store.completions, *IMAGE_COUNTS)
    log.lengths = {name: store.column(f"{name}_tokens")[positions] for name in names}
    if not log.lengths["images"].any():  # a text source: no image columns in the report
        log.lengths = {name: values for name, values in log.lengths.items() if name not in IMAGE_COUNTS}
    return positions[(status == KEPT) | (status == TRUNCATED)]


def _count(dropped: dict[str, Numbers]) -> int:
    return sum(len(rows) for rows in dropped.values())


def row_list(numbers: Numbers, first: int = 5) -> str:
    """``row 3`` or ``rows 3, 8, 12, 20, 31, ...``: the first row numbers of a list."""
    shown = ", ".join(str(int(n)) for n in numbers[:first])
    return f"row{'s' if len(numbers) > 1 else ''} {shown}{', ...' if len(numbers) > first else ''}"
