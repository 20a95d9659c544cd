"""Training examples read, validated and tokenized as training goes (``--data.streaming=true``): for data sets
larger than the disk should hold as a store (``lit_dpo.data.store``), or that should start training at once.

The sources are read in windows of ``window`` rows, each source giving a share in proportion to its weight until it
runs out. A window's examples are shuffled by a generator seeded with (seed, epoch, window number), padded with
weight-0 copies to a multiple of the ranks and dealt to them in turn: every rank runs as many batches, and the order
follows from the data, the seed and the epoch alone. The state after each batch the training loop takes is (epoch,
window number, where each source's window started, examples taken): a resume reads that one window again (a JSONL
file from its byte offset, a ``datasets`` stream from its ``state_dict``, other files read up to it without being
tokenized) and goes on with the next example, as the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import IterableDataset
from torchdata.stateful_dataloader import StatefulDataLoader

from lit_dpo.data.files import RawLine, hf_dataset, is_json_lines, looks_local, raw_records
from lit_dpo.data.prepare import SourceLog
from lit_dpo.data.rows import RowFormat, UnpairedRow, mixed_forms
from lit_dpo.data.sources import Source
from lit_dpo.data.store import (
    CHUNK_ROWS,
    DROP_REASONS,
    TRUNCATED,
    ChunkTokenizer,
    Limits,
    source_identity,
    tokenizer_fingerprint,
)
from lit_dpo.data.tokenize import Example

PEEK_ROWS = 1024  # rows of each source validated before training starts


@dataclass
class Position:
    """Where a source's next rows start."""

    records: int = 0  # raw records (JSONL: lines) read before them
    offset: int = 0  # their byte offset in a JSONL file
    hf_state: Optional[dict] = None  # a ``datasets`` stream's ``state_dict()`` there
    done: bool = False  # the source has no rows left


class SourceReader:
    """One source's raw ``(row number, record)`` items from a ``Position`` on: ``take(n)`` the next ``n``;
    ``position`` is then where the rest start."""

    def __init__(self, source: Source, position: Position) -> None:
        self.source, self.position = source, copy.deepcopy(position)
        self._hf: Any = None  # the ``datasets`` stream, for sources that are not files
        self._items = self._open()

    def take(self, n: int) -> list[tuple[int, Any]]:
        items = list(islice(self._items, n))
        self.position.records += len(items)
        self.position.done = len(items) < n
        if self._hf is not None:
            self.position.hf_state = self._hf.state_dict()
        return items

    def _open(self) -> Iterator[tuple[int, Any]]:
        path = self.source.path
        local = Path(path).expanduser()
        if local.is_file() and is_json_lines(local):
            return self._jsonl_lines(local)
        if local.is_file() or (looks_local(path) and not local.is_dir()):
            return islice(raw_records(path), self.position.records, None)  # read up to it, not tokenized
        self._hf = hf_dataset(path, self.source.split or "train", self.source.config_name, streaming=True)
        if self.position.hf_state is not None:
            self._hf.load_state_dict(self.position.hf_state)
        return enumerate(self._hf, start=self.position.records + 1)

    def _jsonl_lines(self, path: Path) -> Iterator[tuple[int, Any]]:
        with path.open("rb") as handle:
            handle.seek(self.position.offset)
            for number, raw in enumerate(handle, start=self.position.records + 1):
                self.position.offset += len(raw)
                yield number, RawLine(raw)


@dataclass
class Window:
    """The examples of one window, in source order, with what became of each source's rows in it."""

    starts: list[Position]  # where each source's rows in it start
    examples: list[Example]
    logs: list[SourceLog] = field(default_factory=list)


class PairStream(IterableDataset):
    """The training examples of ``sources``, read as they are needed (see the module's docstring).

    ``commit()`` marks one batch as taken by the training loop (``PreferenceDataModule`` calls it as each batch
    reaches the model); ``state_dict()`` is the state after the last batch taken, not after those fetched ahead."""

    def __init__(
        self, sources: list[Source], source_ids: list[int], roles: Optional[dict[str, str]], tokenizer: Any,
        limits: Limits, window: int, shuffle: bool, seed: int, batch_size: int, epoch: Callable[[], int] = lambda: 0,
        processor: Any = None,
    ) -> None:  # fmt: skip
        self.sources, self.source_ids, self.window, self.shuffle, self.seed = sources, source_ids, window, shuffle, seed
        self.jobs = [
            ChunkTokenizer(s.path, RowFormat(s.columns or {}, roles or {}), tokenizer, limits, processor)
            for s in sources
        ]
        self.batch_size, self.epoch = batch_size, epoch
        self.rank, self.world_size = 0, 1
        self.unpaired: Optional[bool] = None  # the rows' form, from the first window
        self._first_logs: Optional[list[SourceLog]] = None  # what became of window 0's rows
        self._fetched: deque[dict[str, Any]] = deque()  # states after the batches fetched and not yet taken
        self._taken: dict[str, Any] = {}  # the state after the last batch taken ({}: the start)
        self._resume: Optional[dict[str, Any]] = None

    def peek(self) -> None:
        """Read and validate (not tokenize) each source's first rows: the rows' form, and a bad row among them
        stops the run before it starts."""
        for i, source in enumerate(self.sources):
            _, _, rows = self.jobs[i].read(SourceReader(source, Position()).take(PEEK_ROWS))
            self._check_form(source, rows)

    def first_window(self) -> Window:
        """Window 0 (for the data report: not kept)."""
        return next(self._windows(None))

    def first_logs(self) -> list[SourceLog]:
        """What became of window 0's rows, by source (kept once it has been read)."""
        if self._first_logs is None:
            self.first_window()
        return self._first_logs  # type: ignore[return-value]

    def __iter__(self) -> Iterator[Example]:
        state, self._resume = self._resume, None
        self._fetched.clear()
        if state and state.get("done"):
            return  # the pass had ended
        epoch = state["epoch"] if state else self.epoch()
        number, taken = (state["window"], state["taken"]) if state else (0, 0)
        starts = [Position(**p) for p in state["starts"]] if state else None
        yielded = 0
        for window in self._windows(starts if number else None):
            share = self._share(window.examples, epoch, number)
            for k in range(taken, len(share)):
                yielded += 1
                if yielded % self.batch_size == 0:
                    self._fetched.append(self._state(epoch, number, window, k + 1))
                yield share[k]
            number, taken = number + 1, 0
        if yielded % self.batch_size:
            self._fetched.append({"epoch": epoch, "done": True})

    def _windows(self, starts: Optional[list[Position]]) -> Iterator[Window]:
        """The windows from one that starts at ``starts`` (None: from the first) to the sources' end."""
        readers = [SourceReader(s, p) for s, p in zip(self.sources, starts or [Position() for _ in self.sources])]
        if starts is None and self._first_logs is None:  # window 0, read for the first time
            window = self._read(readers)
            self._first_logs = window.logs
            for log in window.logs:
                if log.warning(self.jobs[0].limits) is not None:
                    rank_zero_warn(f"{log.warning(self.jobs[0].limits)} (in the first window of {self.window} rows)")
            yield window
        while not all(r.position.done for r in readers):
            yield self._read(readers)

    def _read(self, readers: list[SourceReader]) -> Window:
        active = [i for i, r in enumerate(readers) if not r.position.done]
        weights = {i: self.sources[i].weight or 1.0 for i in active}
        window = Window([copy.deepcopy(r.position) for r in readers], [])
        for i in active:
            share = max(1, round(self.window * weights[i] / sum(weights.values())))
            self._tokenize(i, readers[i].take(share), window)
        return window

    def _tokenize(self, i: int, items: list[tuple[int, Any]], window: Window) -> None:
        job, source = self.jobs[i], self.sources[i]
        records, dropped, rows = job.read(items)
        log = SourceLog(source.name or source.path, source.path, "train (first window)", records)
        log.dropped.update(dropped)
        self._check_form(source, rows)
        truncated: list[int] = []
        fitted = (
            item for start in range(0, len(rows), CHUNK_ROWS) for item in job.fitted(rows[start : start + CHUNK_ROWS])
        )
        for row, whole, kept, status in fitted:
            for name, ids in (("prompt", whole.prompt_ids), *whole.completions.items()):
                log.lengths.setdefault(name, []).append(len(ids))  # type: ignore[union-attr]
            if kept is not None:
                window.examples.append(replace(kept, source=self.source_ids[i], row=row.row))
                truncated += [row.row] if status == TRUNCATED else []
            else:
                log.dropped.setdefault(DROP_REASONS[status], []).append(row.row)
        log.truncated, log.sampled = truncated, log.kept
        window.logs.append(log)

    def _check_form(self, source: Source, rows: list[Any]) -> None:
        if rows and self.unpaired is not None and isinstance(rows[0], UnpairedRow) != self.unpaired:
            raise mixed_forms(source.path, rows[0].row, 1, self.unpaired)
        self.unpaired = isinstance(rows[0], UnpairedRow) if rows and self.unpaired is None else self.unpaired

    def _share(self, examples: list[Example], epoch: int, number: int) -> list[Example]:
        """This rank's examples of a window: shuffled, padded to a multiple of the ranks, dealt in turn."""
        order = np.arange(len(examples))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, number]).permutation(len(examples))
        padded = np.resize(order, len(order) + (-len(order) % self.world_size))
        mine = range(self.rank, len(padded), self.world_size)
        return [examples[padded[j]] if j < len(order) else replace(examples[padded[j]], weight=0.0) for j in mine]

    @staticmethod
    def _state(epoch: int, number: int, window: Window, taken: int) -> dict[str, Any]:
        return {"epoch": epoch, "window": number, "starts": [asdict(p) for p in window.starts], "taken": taken}

    def commit(self) -> None:
        """One batch fetched earlier has been taken by the training loop."""
        if self._fetched:
            self._taken = self._fetched.popleft()

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._taken)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._taken, self._resume = copy.deepcopy(state), copy.deepcopy(state) or None

    def fingerprint(self, roles: Optional[dict[str, str]], tokenizer: Any, limits: Limits) -> str:
        """What the order of examples follows from: the sources (local files by path, size and modification time;
        others by name, split and configuration), the window, the rows' format, the tokenizer and the limits."""
        what = {
            "sources": [[_identity(s), s.split, s.config_name, s.columns, s.weight] for s in self.sources],
            "window": self.window, "shuffle": self.shuffle, "roles": roles,
            "tokenizer": tokenizer_fingerprint(tokenizer), "limits": [limits.max_length, limits.max_prompt_length,
            limits.truncation],
        }  # fmt: skip
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _identity(source: Source) -> Any:
    local = Path(source.path).expanduser()
    return source_identity(source) if local.exists() or looks_local(source.path) else source.path


class StreamLoader(StatefulDataLoader):
    """The loader of a ``PairStream``: its state is the stream's after the batches taken. The loader's own flags
    (its fetcher ended, its iterator finished) say whether it has reached the stream's end, which it does one
    batch ahead of the training loop; the stream's state says whether the loop has."""

    dataset: PairStream

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if isinstance(state.get("fetcher_state"), dict):
            state["fetcher_state"]["fetcher_ended"] = False
        state["_iterator_finished"] = False
        return state
