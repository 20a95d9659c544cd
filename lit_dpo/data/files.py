"""Records as files and data sets hold them: ``(row number, record)`` from JSONL / JSON / Parquet / CSV files,
saved data sets, folders of data files and Hub data sets.

Bytes are decoded as UTF-8 (a BOM is skipped); bytes that are not UTF-8 are kept as lone surrogates, so that
validation can name the row and field that hold them (``has_invalid_utf8``). JSONL rows end at ``\\n`` only:
U+2028 or U+0085 inside a string is text, not a line break. Row numbers are line numbers in JSONL and CSV files,
1-based positions elsewhere.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

from lit_dpo.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # how surrogateescape keeps a byte that is not UTF-8


def records(path: str, split: str = "train", config_name: Optional[str] = None) -> Iterator[tuple[int, Any]]:
    """Every record of ``path``: a data file, a saved data set or folder of data files, or a Hub data set."""
    for number, raw in raw_records(path, split, config_name):
        record = record_of(raw, path, number)
        if record is not None:
            yield number, record


class RawLine(bytes):
    """A JSONL line not decoded yet (``record_of`` decodes it, in whichever process tokenizes it)."""


def raw_records(path: str, split: str = "train", config_name: Optional[str] = None) -> Iterator[tuple[int, Any]]:
    """``records`` before decoding: JSONL lines as ``RawLine`` (decoding is most of reading them), other records
    as they are."""
    local = Path(path).expanduser()
    if local.is_file():
        return _file_records(local, path)
    if local.is_dir() or not looks_local(path):
        return enumerate(hf_dataset(path, split, config_name), start=1)
    raise DataError.at(
        path, None, None, "file not found" if local.suffix.lower() in SUFFIXES else "no such file or folder"
    )


def record_of(raw: Any, path: str, number: int) -> Any:
    """The record a ``raw_records`` item holds; None for a blank line."""
    if not isinstance(raw, RawLine):
        return raw
    line = raw.decode("utf-8-sig" if number == 1 else "utf-8", errors="surrogateescape")
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError.at(path, number, None, f"invalid JSON ({err.msg} at column {err.colno})") from None


def looks_local(path: str) -> bool:
    """Whether ``path`` names a local file or folder rather than a Hub data set: it has a data-file suffix or
    starts like a path (``./``, ``../``, ``/``, ``~``), so a missing one is never looked up on the Hub."""
    return path.startswith(("./", "../", "/", "~", ".\\")) or Path(path).suffix.lower() in SUFFIXES


def has_invalid_utf8(text: str) -> bool:
    """Whether decoded text holds bytes that were not UTF-8 (kept as lone surrogates by this module's readers)."""
    return _ESCAPED_BYTE.search(text) is not None


def _file_records(local: Path, name: str) -> Iterator[tuple[int, Any]]:
    suffix = local.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _json_records(local, name)
    if suffix == ".csv":
        return _csv_records(local)
    if suffix == ".parquet":
        return enumerate(_parquet_rows(local, name), start=1)
    raise DataError.at(name, None, None, f"unsupported file type; use {', '.join(SUFFIXES)}")


def _decoded(path: Path) -> str:
    return path.read_bytes().decode("utf-8-sig", errors="surrogateescape")


def is_json_lines(path: Path) -> bool:
    """Whether a .jsonl/.json file holds a record a line (read line by line), not one JSON array (read whole)."""
    if path.suffix.lower() == ".jsonl":
        return True
    with path.open("rb") as handle:
        start = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    return path.suffix.lower() == ".json" and not start.startswith(b"[")


def _json_records(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    if not is_json_lines(path):  # one JSON array: read whole
        try:
            records = json.loads(_decoded(path))
        except json.JSONDecodeError as err:
            raise DataError.at(name, None, None, f"invalid JSON at line {err.lineno}: {err.msg}") from None
        yield from enumerate(records, start=1)
        return
    with path.open("rb") as handle:  # line by line: memory stays flat in the file's size
        for number, raw in enumerate(handle, start=1):  # binary lines end at b"\n" only: U+2028 inside is text
            yield number, RawLine(raw)


def _csv_records(path: Path) -> Iterator[tuple[int, Any]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the default (128 KiB) is below a long completion
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            yield reader.line_num, record


def _parquet_rows(path: Path, name: str) -> Iterator[dict[str, Any]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):  # batch by batch: memory stays flat
            yield from batch.to_pylist()
    except (pyarrow.ArrowException, OSError) as err:
        raise DataError.at(name, None, None, f"not a readable Parquet file ({str(err).splitlines()[0]})") from None


def hf_dataset(path: str, split: str, config_name: Optional[str], streaming: bool = False) -> Any:
    """A data set saved with ``save_to_disk``, a folder of data files, or a Hub data set's ``split``; with
    ``streaming``, as an iterable data set (read as it is iterated, resumable from its ``state_dict``)."""
    import datasets

    local = Path(path).expanduser()
    if (local / "dataset_dict.json").exists() or (local / "state.json").exists():
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError.at(path, None, None, f"has no split '{split}'; its splits: {', '.join(loaded)}")
            loaded = loaded[split]
        return loaded.to_iterable_dataset() if streaming else loaded
    try:
        where = str(local) if local.is_dir() else path
        return datasets.load_dataset(where, config_name, split=split, streaming=streaming)
    except Exception as err:  # the Hub and datasets raise many types; the user needs the one line
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        raise DataError.at(path, None, None, f"could not load split '{split}' ({reason})") from None
