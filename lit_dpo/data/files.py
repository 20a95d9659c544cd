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
    local = Path(path).expanduser()
    if local.is_file():
        return _file_records(local, path)
    if local.is_dir() or not looks_local(path):
        return enumerate(_hf_dataset(path, split, config_name), start=1)
    raise DataError.at(
        path, None, None, "file not found" if local.suffix.lower() in SUFFIXES else "no such file or folder"
    )


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


def _json_records(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    text = _decoded(path)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError.at(name, None, None, f"invalid JSON at line {err.lineno}: {err.msg}") from None
        yield from enumerate(records, start=1)
        return
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 inside a string is text
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError.at(name, number, None, f"invalid JSON ({err.msg} at column {err.colno})") from None


def _csv_records(path: Path) -> Iterator[tuple[int, Any]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the default (128 KiB) is below a long completion
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            yield reader.line_num, record


def _parquet_rows(path: Path, name: str) -> list[dict[str, Any]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as err:
        raise DataError.at(name, None, None, f"not a readable Parquet file ({str(err).splitlines()[0]})") from None


def _hf_dataset(path: str, split: str, config_name: Optional[str]) -> Any:
    """A data set saved with ``save_to_disk``, a folder of data files, or a Hub data set's ``split``."""
    import datasets

    local = Path(path).expanduser()
    if (local / "dataset_dict.json").exists() or (local / "state.json").exists():
        loaded = datasets.load_from_disk(str(local))
        if not isinstance(loaded, datasets.DatasetDict):
            return loaded
        if split not in loaded:
            raise DataError.at(path, None, None, f"has no split '{split}'; its splits: {', '.join(loaded)}")
        return loaded[split]
    try:
        return datasets.load_dataset(str(local) if local.is_dir() else path, config_name, split=split)
    except Exception as err:  # the Hub and datasets raise many types; the user needs the one line
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        raise DataError.at(path, None, None, f"could not load split '{split}' ({reason})") from None
