"""Several data sets in one run: ``Source`` names one, how to read it and how much of it to train on.

``--data.path`` is one path, or a list of paths and sources mixed in one training set, as TRL's
``DatasetMixtureConfig`` and open-instruct's mixer list do::

    --data.path='[hh.jsonl, {path: trl-lib/ultrafeedback_binarized, weight: 0.5, name: uf}]'

Each row keeps its source, so validation metrics can be split by source (``val/<name>/...``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, TypeVar, Union

import numpy as np

from lit_dpo.errors import InputError

T = TypeVar("T")


@dataclass
class Source:
    """One data set: where it is and how to read it; for training, how much of it to use.

    Args:
        path: A .jsonl/.json/.parquet/.csv file, a saved data set or folder of data files, or a Hub data set.
        name: Its name in metrics (``val/<name>/...``) and the data report; default: the file's or data set's name.
        split: Split to read from a data set folder or the Hub (default: ``--data.split`` / ``--data.val_split_name``).
        config_name: The Hub data set's configuration (default: ``--data.config_name``).
        columns: Column holding each field, e.g. ``{prompt: question}`` (default: ``--data.columns``).
        weight: Train on ``weight`` x its rows: 0.5 for a seeded half, 2 for every row twice.
        rows: Train on exactly this many of its rows (a seeded sample; rows repeat when it has fewer).
    """

    path: str
    name: Optional[str] = None
    split: Optional[str] = None
    config_name: Optional[str] = None
    columns: Optional[dict[str, str]] = None
    weight: Optional[float] = None
    rows: Optional[int] = None


Sources = Union[str, list[Union[str, Source]]]


def as_sources(
    value: Sources, split: str, config_name: Optional[str], columns: Optional[dict[str, str]]
) -> list[Source]:
    """Every source of ``--data.path`` (or ``val_path``), with the data module's defaults filled in and unique names."""
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise InputError("--data.path needs at least one source")
    sources = []
    for item in items:
        source = _as_source(item)
        _check(source)
        source.split = source.split or split
        source.config_name = source.config_name or config_name
        source.columns = source.columns if source.columns is not None else columns
        sources.append(source)
    names = [s.name or _default_name(s.path) for s in sources]
    for i, source in enumerate(sources):  # the same name twice: number them
        source.name = names[i] if names.count(names[i]) == 1 else f"{names[i]}_{names[:i].count(names[i]) + 1}"
    return sources


def sample(items: Sequence[T], source: Source) -> list[T]:
    """What a training set takes of a source's items (``sampled_positions``)."""
    return [items[i] for i in sampled_positions(len(items), source)]


def sampled_positions(n: int, source: Source) -> np.ndarray:
    """The positions of a source's ``n`` items a training set takes: all of them, ``weight`` x them or ``rows`` of
    them (whole copies, then a seeded random subset, the same on every rank and every run)."""
    every = np.arange(n)
    if source.weight is None and source.rows is None:
        return every
    wanted = source.rows if source.rows is not None else round(source.weight * n)
    copies, extra = divmod(wanted, n) if n else (0, 0)
    rest = np.sort(np.random.default_rng(0).choice(n, extra, replace=False)) if extra else every[:0]
    return np.concatenate([np.tile(every, copies), rest])


def _as_source(item: Union[str, Source, Mapping[str, Any]]) -> Source:
    if isinstance(item, str):
        return Source(item)
    if isinstance(item, Source):
        return replace(item)
    unknown = set(item) - {f.name for f in fields(Source)}
    if unknown or "path" not in item:
        keys = ", ".join(f.name for f in fields(Source))
        raise InputError(f"a source in --data.path takes the keys {keys} (path required), got {dict(item)}")
    return Source(**item)


def _check(source: Source) -> None:
    if source.path.lstrip().startswith(("[", "{")):  # a list or mapping jsonargparse could not read as sources
        raise InputError(
            f"--data.path {source.path!r} is neither a path nor a list of sources; a source takes the keys "
            "path, name, split, config_name, columns, weight, rows"
        )
    if source.weight is not None and source.rows is not None:
        raise InputError(f"source {source.path}: give weight or rows, not both")
    if (source.weight is not None and source.weight <= 0) or (source.rows is not None and source.rows <= 0):
        raise InputError(f"source {source.path}: weight and rows must be > 0")


def _default_name(path: str) -> str:
    local = Path(path)
    return local.stem if local.suffix else local.name or path
