"""Reading and validating rows from JSONL / JSON / Parquet / CSV files, dataset folders or the Hub.

Two row forms, one per file:

- a preference pair (``PairRow``): ``prompt``, ``chosen``, ``rejected``, all strings (standard) or all lists of
  ``{"role", "content"}`` messages (conversational). Conversational rows may leave the prompt implicit in
  ``chosen`` and ``rejected``, as TRL allows: their shared leading messages become the prompt.
- an unpaired example (``UnpairedRow``, for KTO): ``prompt``, ``completion`` and a boolean ``label`` (desirable).

Every problem raises ``DataError`` naming the file, the 1-based row (the line number in JSONL and CSV files)
and the field.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Union

from lit_dpo.errors import DataError

Text = Union[str, list]  # a string, or a list of {"role", "content"} messages
FIELDS = ("prompt", "chosen", "rejected")
UNPAIRED_FIELDS = ("prompt", "completion")
_LABELS = {True: True, False: False, "true": True, "false": False, "1": True, "0": False}  # 1 and 0 == True, False


@dataclass(frozen=True)
class PairRow:
    """A validated preference pair: ``chosen`` preferred over ``rejected`` as the answer to ``prompt``."""

    prompt: Text
    chosen: Text
    rejected: Text
    source: str = "<rows>"  # the file it came from
    row: int = 0  # its 1-based row number there


@dataclass(frozen=True)
class UnpairedRow:
    """A validated unpaired example: one ``completion`` of ``prompt``, ``desirable`` or not (the file's label)."""

    prompt: Text
    completion: Text
    desirable: bool
    source: str = "<rows>"
    row: int = 0


Row = Union[PairRow, UnpairedRow]


def fail(source: str, row: int | None, field: str | None, problem: str) -> DataError:
    """The one-line error for a problem at ``source``, ``row``, ``field`` (each optional)."""
    where = source + (f", row {row}" if row is not None else "") + (f", field '{field}'" if field else "")
    return DataError(f"{where}: {problem}")


def read_rows(path: str, split: str = "train") -> list[Row]:
    """Read and validate every row of ``path``; all of them have one form (pairs, or unpaired examples)."""
    rows = [validate(record, path, number) for number, record in _records(path, split)]
    if not rows:
        raise fail(path, None, None, "no rows found (the file is empty)")
    for row in rows:
        if type(row) is not type(rows[0]):
            first = "prompt/completion/label" if isinstance(rows[0], UnpairedRow) else "prompt/chosen/rejected"
            raise fail(path, row.row, None, f"mixes row forms: row {rows[0].row} has {first}, this one not")
    return rows


def validate(record: Any, source: str = "<rows>", row: int = 0) -> Row:
    """One record (a dict read from a file) as a validated row."""
    if not isinstance(record, dict):
        raise fail(source, row, None, f"expected an object with fields {FIELDS}, got {type(record).__name__}")
    if "completion" in record and "chosen" not in record:
        return _validate_unpaired(record, source, row)
    if "prompt" not in record and isinstance(record.get("chosen"), list):
        record = _extract_prompt(record, source, row)
    for field in FIELDS:
        if field not in record:
            raise fail(source, row, field, "missing")
        _check_value(record[field], source, row, field)
    if len({isinstance(record[field], list) for field in FIELDS}) > 1:
        raise fail(source, row, None, "mixes strings and message lists; use one format for prompt/chosen/rejected")
    return PairRow(record["prompt"], record["chosen"], record["rejected"], source, row)


def _records(path: str, split: str) -> Iterator[tuple[int, Any]]:
    local = Path(path)
    suffix = local.suffix.lower()
    if local.is_file():
        if suffix in (".jsonl", ".json"):
            return _json_records(local)
        if suffix == ".csv":
            return _csv_records(local)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return enumerate(pq.read_table(local).to_pylist(), start=1)
        raise fail(path, None, None, "unsupported file type; use .jsonl, .json, .parquet or .csv")
    if suffix in (".jsonl", ".json", ".csv", ".parquet") and not local.exists():
        raise fail(path, None, None, "file not found")
    return enumerate(_hf_dataset(path, split), start=1)


def _json_records(path: Path) -> Iterator[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise fail(str(path), None, None, f"invalid JSON at line {err.lineno}: {err.msg}") from None
        yield from enumerate(records, start=1)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise fail(str(path), number, None, f"invalid JSON ({err.msg} at column {err.colno})") from None


def _csv_records(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            yield reader.line_num, record


def _hf_dataset(path: str, split: str) -> Any:
    """A dataset saved with ``save_to_disk``, a folder of data files, or a Hub dataset name."""
    import datasets

    local = Path(path)
    if (local / "dataset_dict.json").exists() or (local / "state.json").exists():
        loaded = datasets.load_from_disk(path)
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    try:
        return datasets.load_dataset(path, split=split)
    except Exception as err:  # the Hub and datasets raise many types; the user needs the one line
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        raise fail(
            path, None, None, f"not a local file or folder, and split '{split}' failed to load ({reason})"
        ) from None


def _validate_unpaired(record: dict[str, Any], source: str, row: int) -> UnpairedRow:
    for field in (*UNPAIRED_FIELDS, "label"):
        if field not in record:
            raise fail(source, row, field, "missing")
    for field in UNPAIRED_FIELDS:
        _check_value(record[field], source, row, field)
    if isinstance(record["prompt"], list) != isinstance(record["completion"], list):
        raise fail(source, row, None, "mixes strings and message lists; use one format for prompt/completion")
    label = record["label"]
    key = label.strip().lower() if isinstance(label, str) else label
    if not isinstance(key, (bool, int, str)) or key not in _LABELS:  # not 1.0 (== 1 as a key), not a list
        raise fail(source, row, "label", f"expected true or false, got {label!r:.40}")
    return UnpairedRow(record["prompt"], record["completion"], _LABELS[key], source, row)


def _check_value(value: Any, source: str, row: int, field: str) -> None:
    if isinstance(value, str):
        return
    if value is None:
        raise fail(source, row, field, "is null; expected a string or a list of messages")
    if not isinstance(value, list):
        raise fail(source, row, field, f"expected a string or a list of messages, got {type(value).__name__}")
    if not value:
        raise fail(source, row, field, "is an empty message list")
    for message in value:
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)):
            raise fail(source, row, field, f"each message needs a string 'role', got {message!r:.80}")
        if not isinstance(message.get("content"), str):
            raise fail(source, row, field, f"each message needs a string 'content', got {message!r:.80}")


def _extract_prompt(record: dict[str, Any], source: str, row: int) -> dict[str, Any]:
    """Split ``chosen``/``rejected`` conversations into their shared leading messages and the rest."""
    chosen, rejected = record["chosen"], record.get("rejected")
    if not isinstance(rejected, list):
        return record  # the checks that follow name the problem
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise fail(source, row, "prompt", "missing, and chosen/rejected share no leading messages to use as one")
    return record | {"prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}
