"""Tokenized examples on disk, read in place: a source is read, validated and tokenized once into an Arrow file in
lit_dpo's cache, keyed by what its examples follow from (the source's files or Hub fingerprint, split, columns,
roles, the tokenizer, the length limits and the library versions). Later starts and resumes memory-map that file:
nothing is tokenized again, memory does not grow with the rows, and the processes of a node share one copy of the
file in the page cache.

A store holds every valid row of its source in file order (``status`` says whether the length limits kept it
whole, truncated it or dropped it), so that holding out a validation fraction and reporting what the limits did
work on the store alone. Rows are tokenized in chunks, in ``num_proc`` processes when asked; a bad row stops the
build with the one-line error naming its file, row and field, and no store is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pyarrow as pa
import tokenizers
import transformers

from lit_dpo.data.chunks import chunked, default_num_proc, ordered_map
from lit_dpo.data.files import hf_dataset, looks_local, raw_records, record_of
from lit_dpo.data.rows import PairRow, Row, RowFormat, UnpairedRow, mixed_forms, validated_rows
from lit_dpo.data.sources import Source
from lit_dpo.data.tokenize import Example, Pair, Truncation, UnpairedExample, fit_length, tokenize_rows
from lit_dpo.data.vision import feature_token
from lit_dpo.errors import DataError

FORMAT = 3  # bumped whenever what a store holds, or how rows become token ids, changes
CHUNK_ROWS = 1024  # rows tokenized (and written) together
KEPT, TRUNCATED, OVER_LIMIT, IDENTICAL = 0, 1, 2, 3  # ``status`` of a row
DROP_REASONS = {OVER_LIMIT: "over a length limit", IDENTICAL: "identical completions after truncation"}
_IDS = pa.list_(pa.int32())
IMAGE_COUNTS = ("images", "image tokens")  # per row, in ``<name>_tokens`` columns as the token counts


@dataclass(frozen=True)
class Limits:
    max_length: Optional[int]
    max_prompt_length: Optional[int]
    truncation: Truncation

    def __str__(self) -> str:
        return f"max_length={self.max_length}, max_prompt_length={self.max_prompt_length}"


class ExampleStore:
    """One source's tokenized rows, memory-mapped from its Arrow file: ``example(i)`` builds the i-th on demand."""

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        self.folder = folder
        self.unpaired: bool = meta["unpaired"]
        self.rows_read: int = meta["rows_read"]  # records read, rows left out by validation included
        self.read_dropped: dict[str, list[int]] = meta["read_dropped"]  # reason -> row numbers (empty completions...)
        reader = pa.ipc.open_file(pa.memory_map(str(folder / "examples.arrow")))
        self._batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        self._starts = np.cumsum([0] + [len(b) for b in self._batches])  # first row of each batch
        self.completions = ("completion",) if self.unpaired else ("chosen", "rejected")

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __reduce__(self) -> tuple:
        return ExampleStore, (self.folder,)  # a process it is sent to (spawned loader workers) maps the file too

    def example(self, i: int) -> Example:
        batch_number = int(np.searchsorted(self._starts, i, side="right")) - 1
        batch, j = self._batches[batch_number], i - int(self._starts[batch_number])
        ids = {name: batch.column(name)[j].as_py() for name in ("prompt", *self.completions)}
        row = batch.column("row")[j].as_py()
        images = tuple(batch.column("images")[j].as_py())
        if self.unpaired:
            desirable = batch.column("desirable")[j].as_py()
            return UnpairedExample(ids["prompt"], ids["completion"], desirable, row=row, images=images)
        return Pair(ids["prompt"], ids["chosen"], ids["rejected"], row=row, images=images)

    def column(self, name: str) -> np.ndarray:
        """One numeric column over all rows (row, status, digest, <field>_tokens), as a NumPy array."""
        parts = [b.column(name).to_numpy(zero_copy_only=False) for b in self._batches]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def example_digest(example: Example, image_processor: str = "") -> int:
    """A 64-bit hash of an example's token ids (and label; its images and the ``image_processor``'s settings that
    turn them into pixels): duplicates, the data fingerprint and the reference cache's key compare these."""
    values = [len(example.prompt_ids), *example.prompt_ids]
    for ids in example.completions.values():
        values += [len(ids), *ids]
    values.append(int(example.desirable) if isinstance(example, UnpairedExample) else -1)
    digest = hashlib.blake2b(array("q", values).tobytes(), digest_size=8)
    for image in example.images:  # a pair's images are part of what it is (duplicates, caches, resumes)
        digest.update(hashlib.blake2b(image, digest_size=16).digest())
    if example.images:
        digest.update(image_processor.encode())
    return int.from_bytes(digest.digest(), "little")


def open_store(
    source: Source, roles: Optional[dict[str, str]], tokenizer: Any, limits: Limits, root: Path,
    num_proc: Optional[int] = None, processor: Any = None,
) -> ExampleStore:  # fmt: skip
    """The source's store under ``root``: read from the cache, or built there first (``processor``: a
    vision-language model's, for rows with images)."""
    folder = root / store_key(source, roles, tokenizer, limits, processor)
    if not (folder / "meta.json").is_file():
        fmt = RowFormat(source.columns or {}, roles or {})
        job = ChunkTokenizer(source.path, fmt, tokenizer, limits, processor)
        build(folder, source, job, num_proc if num_proc is not None else default_num_proc())
    return ExampleStore(folder)


def store_key(
    source: Source, roles: Optional[dict[str, str]], tokenizer: Any, limits: Limits, processor: Any = None
) -> str:
    """What a source's examples follow from, hashed: its cache folder's name."""
    what = {
        "format": FORMAT,
        "source": source_identity(source),
        "split": source.split,
        "config_name": source.config_name,
        "columns": source.columns,
        "roles": roles,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "processor": processor.to_json_string() if processor is not None else None,  # image processor, template
        "limits": [limits.max_length, limits.max_prompt_length, limits.truncation],
        "versions": [tokenizers.__version__, transformers.__version__],
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:40]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of what a tokenizer's output depends on: its vocabulary and rules, special tokens and chat template."""
    rules = (
        tokenizer.backend_tokenizer.to_str() if tokenizer.is_fast else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    )
    rest = {
        "class": type(tokenizer).__name__,
        "special": tokenizer.special_tokens_map,
        "template": tokenizer.chat_template,
    }
    return hashlib.sha256((rules + json.dumps(rest, sort_keys=True, default=str)).encode()).hexdigest()


def source_identity(source: Source) -> Any:
    """Files by path, size and modification time (a changed file is read again); a Hub data set by the
    fingerprint ``datasets`` gives the split it loaded."""
    local = Path(source.path).expanduser()
    if local.is_file():
        return [_stat(local)]
    if local.is_dir():
        return [_stat(p) for p in sorted(local.rglob("*")) if p.is_file()]
    if looks_local(source.path):
        return None  # missing: reading it names the problem
    return hf_dataset(source.path, source.split or "train", source.config_name)._fingerprint  # no public accessor


def _stat(path: Path) -> list[Any]:
    status = path.stat()
    return [str(path.resolve()), status.st_size, status.st_mtime_ns]


def build(folder: Path, source: Source, job: ChunkTokenizer, num_proc: int) -> None:
    """Read, validate and tokenize every row of ``source`` into ``folder`` (written aside, then renamed in place)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    partial.mkdir()
    try:
        meta = _write(partial / "examples.arrow", source, job, num_proc)
        (partial / "meta.json").write_text(json.dumps(meta))
        try:
            partial.rename(folder)
        except OSError:  # another process (another node) put the same store in place first: keep that one
            if not (folder / "meta.json").is_file():
                raise
    finally:
        if partial.exists():
            shutil.rmtree(partial)  # what this build wrote, and only that


def _write(path: Path, source: Source, job: ChunkTokenizer, num_proc: int) -> dict:
    chunks = chunked(raw_records(source.path, source.split or "train", source.config_name), CHUNK_ROWS)
    meta: dict[str, Any] = {"unpaired": None, "rows_read": 0, "read_dropped": {}}
    first_row: Optional[int] = None
    with pa.OSFile(str(path), "wb") as sink, ordered_map(job, num_proc) as mapped:
        writer: Optional[pa.ipc.RecordBatchFileWriter] = None
        for chunk in mapped(chunks):
            meta["rows_read"] += chunk.records
            for reason, numbers in chunk.dropped.items():
                meta["read_dropped"].setdefault(reason, []).extend(numbers)
            if chunk.batch is None:
                continue
            if meta["unpaired"] is not None and chunk.unpaired != meta["unpaired"]:
                raise mixed_forms(source.path, chunk.first_row, first_row, meta["unpaired"])
            meta["unpaired"], first_row = chunk.unpaired, first_row or chunk.first_row
            writer = writer or pa.ipc.new_file(sink, chunk.batch.schema)
            writer.write_batch(chunk.batch)
        if writer is None:
            writer = pa.ipc.new_file(sink, _schema(bool(meta["unpaired"])))
        writer.close()
    if meta["rows_read"] == 0:
        raise DataError.at(source.path, None, None, "no rows found (the file is empty)")
    meta["unpaired"] = bool(meta["unpaired"])
    return meta


@dataclass
class _Chunk:
    records: int
    dropped: dict[str, list[int]]
    batch: Optional[pa.RecordBatch]
    unpaired: bool
    first_row: Optional[int]


@dataclass
class ChunkTokenizer:
    """What turns a chunk of raw records into a record batch: in this process, or in each worker process."""

    path: str
    fmt: RowFormat
    tokenizer: Any
    limits: Limits
    processor: Any = None  # a vision-language model's, for rows with images

    def _image_tokens(self, example: Example) -> int:
        return example.prompt_ids.count(feature_token(self.processor)[1]) if self.processor is not None else 0

    @property
    def _pixels(self) -> str:
        """How images become pixels: the image processor's settings."""
        return self.processor.image_processor.to_json_string() if self.processor is not None else ""

    def __call__(self, chunk: list[tuple[int, Any]]) -> _Chunk:
        records, dropped, rows = self.read(chunk)
        batch = self._batch(rows) if rows else None
        return _Chunk(
            records, dropped, batch, bool(rows) and isinstance(rows[0], UnpairedRow), rows[0].row if rows else None
        )

    def read(self, chunk: list[tuple[int, Any]]) -> tuple[int, dict[str, list[int]], list[Row]]:
        """A chunk of raw records as (records in it, row numbers left out by reason, the valid rows)."""
        numbered = [(n, record) for n, raw in chunk if (record := record_of(raw, self.path, n)) is not None]
        read = validated_rows(numbered, self.path, self.fmt)  # blank lines are no records
        return len(numbered), read.dropped, read.rows

    def fitted(self, rows: list[Row]) -> Iterator[tuple[Row, Example, Optional[Example], int]]:
        """Each row tokenized: (row, its whole example, the example the length limits left or None, status)."""
        for row, example in zip(rows, tokenize_rows(self.tokenizer, rows, self.processor)):
            fitted, status = self._fitted(row, example)
            yield row, example, fitted if status != IDENTICAL else None, status

    def _batch(self, rows: list[Row]) -> pa.RecordBatch:
        unpaired = isinstance(rows[0], UnpairedRow)
        names = ("completion",) if unpaired else ("chosen", "rejected")
        columns: dict[str, list] = {k: [] for k in ("row", "status", "digest", "prompt", "images", *names)}
        columns |= {f"{k}_tokens": [] for k in ("prompt", *names, *IMAGE_COUNTS)}
        pixels = self._pixels
        for row, example, kept, status in self.fitted(rows):
            columns["row"].append(row.row)
            columns["status"].append(status)
            for name, ids in (("prompt", example.prompt_ids), *example.completions.items()):
                columns[f"{name}_tokens"].append(len(ids))
            columns["images_tokens"].append(len(row.images))  # counts, as the report shows them: images,
            columns["image tokens_tokens"].append(self._image_tokens(example))  # and their tokens in the prompt
            columns["digest"].append(example_digest(kept, pixels) if kept is not None else 0)
            columns["prompt"].append(kept.prompt_ids if kept is not None else [])
            columns["images"].append(list(kept.images) if kept is not None else [])
            for name in names:
                columns[name].append(kept.completions[name] if kept is not None else [])
        if unpaired:
            columns["desirable"] = [row.desirable for row in rows if isinstance(row, UnpairedRow)]
        return pa.RecordBatch.from_pydict(columns, schema=_schema(unpaired))

    def _fitted(self, row: Row, example: Example) -> tuple[Optional[Example], int]:
        limits = self.limits
        fitted, problem = fit_length(example, limits.max_length, limits.max_prompt_length, limits.truncation)
        if problem is not None and limits.truncation == "error":
            field_name, what = problem
            raise DataError.at(
                self.path, row.row, field_name,
                f"{what} (raise --data.max_length, or pass --data.truncation=keep_start or drop)",
            )  # fmt: skip
        if fitted is None:
            return None, OVER_LIMIT  # truncation="drop"
        if problem is None:
            return fitted, KEPT
        if example.images and fitted.prompt_ids != example.prompt_ids:
            return None, OVER_LIMIT  # a cut prompt would lose image tokens its pixels still need: dropped, counted
        if isinstance(fitted, Pair) and isinstance(row, PairRow) and fitted.chosen_ids == fitted.rejected_ids:
            return fitted, IDENTICAL  # nothing left to prefer
        return fitted, TRUNCATED


def _schema(unpaired: bool) -> pa.Schema:
    names = ("completion",) if unpaired else ("chosen", "rejected")
    fields = [("row", pa.int64()), ("status", pa.int8()), ("digest", pa.uint64()), ("prompt", _IDS)]
    fields.append(("images", pa.list_(pa.binary())))  # the prompt's images, encoded (vision-language rows)
    fields += [(name, _IDS) for name in names]
    fields += [(f"{k}_tokens", pa.int32()) for k in ("prompt", *names, *IMAGE_COUNTS)]
    return pa.schema(fields + ([("desirable", pa.bool_())] if unpaired else []))
