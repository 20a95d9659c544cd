"""From sources to examples: read each source's rows, hold some out, tokenize them, fit them to the length
limits, and keep a ``SourceLog`` of what became of every row (for the one warning per source, and the data
report)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from lit_dpo.data.rows import Row, RowFormat, Rows, read_rows
from lit_dpo.data.sources import Source
from lit_dpo.data.tokenize import Example, Pair, Truncation, fit_length, tokenize_row
from lit_dpo.errors import DataError


@dataclass(frozen=True)
class Limits:
    max_length: Optional[int]
    max_prompt_length: Optional[int]
    truncation: Truncation

    def __str__(self) -> str:
        return f"max_length={self.max_length}, max_prompt_length={self.max_prompt_length}"


@dataclass
class SourceLog:
    """What became of one source's rows in one stage (train or val)."""

    name: str
    path: str
    stage: str
    rows: int = 0  # rows read, dropped ones included
    truncated: list[int] = field(default_factory=list)  # row numbers
    dropped: dict[str, list[int]] = field(default_factory=dict)  # reason -> row numbers
    lengths: dict[str, list[int]] = field(default_factory=dict)  # prompt/chosen/... -> tokens before the limits

    @property
    def kept(self) -> int:
        return self.rows - sum(len(rows) for rows in self.dropped.values())

    def warning(self, limits: Limits) -> Optional[str]:
        """One line on what was truncated or dropped, with counts and the first row numbers; None if nothing."""
        by_length = {reason: rows for reason, rows in self.dropped.items() if reason in _LENGTH_REASONS}
        other = {reason: rows for reason, rows in self.dropped.items() if reason not in _LENGTH_REASONS}
        parts = []
        if self.truncated or by_length:
            dropped = sum(len(rows) for rows in by_length.values())
            details = ([("truncated", self.truncated)] if self.truncated else []) + list(by_length.items())
            parts.append(
                f"{len(self.truncated)} of {self.rows - _count(other)} pairs truncated and {dropped} dropped to fit "
                f"{limits} ({'; '.join(f'{what}: {row_list(rows)}' for what, rows in details)})"
            )
        if other:
            dropped = "; ".join(f"{reason}: {row_list(rows)}" for reason, rows in other.items())
            parts.append(f"{_count(other)} of {self.rows} rows dropped ({dropped})")
        return f"{self.path}: {'; '.join(parts)}" if parts else None


_LENGTH_REASONS = ("over a length limit", "identical completions after truncation")


def read_source(source: Source, split: str, roles: Optional[dict[str, str]]) -> Rows:
    return read_rows(source.path, split, source.config_name, RowFormat(source.columns or {}, roles or {}))


def hold_out(rows: Sequence[Row], fraction: float, source: str) -> tuple[list[Row], list[Row]]:
    """Split off a fixed, seeded random ``fraction`` of rows (the same on every rank and every run)."""
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    n_val = max(1, round(len(rows) * fraction))
    if n_val >= len(rows):
        raise DataError(f"{source}: {len(rows)} rows are too few to hold out val_split={fraction}")
    val = set(order[:n_val])
    return [r for i, r in enumerate(rows) if i not in val], [r for i, r in enumerate(rows) if i in val]


def tokenize_rows(rows: Sequence[Row], tokenizer: Any, limits: Limits, log: SourceLog) -> list[Example]:
    """The rows as examples within the limits; what was truncated or dropped goes into ``log``."""
    examples = []
    for row in rows:
        example = tokenize_row(tokenizer, row)
        for name, ids in {"prompt": example.prompt_ids, **example.completions}.items():
            log.lengths.setdefault(name, []).append(len(ids))
        fitted, problem = fit_length(example, limits.max_length, limits.max_prompt_length, limits.truncation)
        if problem is not None and limits.truncation == "error":
            field_name, what = problem
            raise DataError.at(
                row.source, row.row, field_name,
                f"{what} (raise --data.max_length, or pass --data.truncation=keep_start or drop)",
            )  # fmt: skip
        reason = _dropped_after_fitting(fitted, problem)
        if reason is not None:
            log.dropped.setdefault(reason, []).append(row.row)
            continue
        if problem is not None:
            log.truncated.append(row.row)
        examples.append(fitted)
    return examples


def _dropped_after_fitting(fitted: Optional[Example], problem: Optional[tuple[str, str]]) -> Optional[str]:
    if fitted is None:
        return "over a length limit"  # truncation="drop"
    if problem is not None and isinstance(fitted, Pair) and fitted.chosen_ids == fitted.rejected_ids:
        return "identical completions after truncation"  # nothing left to prefer
    return None


def _count(dropped: dict[str, list[int]]) -> int:
    return sum(len(rows) for rows in dropped.values())


def row_list(numbers: list[int], first: int = 5) -> str:
    """``row 3`` or ``rows 3, 8, 12, 20, 31, ...``: the first row numbers of a list."""
    shown = ", ".join(str(n) for n in numbers[:first])
    return f"row{'s' if len(numbers) > 1 else ''} {shown}{', ...' if len(numbers) > first else ''}"
