"""Validating records into rows. Two row forms, one per file:

- a preference pair (``PairRow``): ``prompt``, ``chosen``, ``rejected``, all strings (standard) or all message
  lists (conversational, with an optional ``tools`` column for the chat template). The prompt may be implicit
  in ``chosen`` and ``rejected``: their shared leading messages, or their longest common prefix of text (TRL's
  ``extract_prompt``, as hh-rlhf needs).
- an unpaired example (``UnpairedRow``, for KTO): ``prompt``, ``completion`` and a boolean ``label`` (desirable).

Columns named otherwise are mapped (``RowFormat.columns``), as are roles (``RowFormat.roles``). Every problem is
a ``DataError`` naming the file, the 1-based row and the field; rows with an empty completion or two identical
ones are left out and counted (``Rows.dropped``), never passed on or lost silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Union

from lit_dpo.data.files import has_invalid_utf8, records
from lit_dpo.data.images import has_images, row_images
from lit_dpo.data.messages import (
    image_parts,
    is_blank,
    normalized_messages,
    split_shared_messages,
    split_shared_text,
    text_of,
)
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
    tools: Optional[list] = None  # function schemas for the chat template
    images: tuple[bytes, ...] = ()  # the prompt's images, encoded (``lit_dpo.data.images``)


@dataclass(frozen=True)
class UnpairedRow:
    """A validated unpaired example: one ``completion`` of ``prompt``, ``desirable`` or not (the file's label)."""

    prompt: Text
    completion: Text
    desirable: bool
    source: str = "<rows>"
    row: int = 0
    tools: Optional[list] = None
    images: tuple[bytes, ...] = ()


Row = Union[PairRow, UnpairedRow]


@dataclass(frozen=True)
class RowFormat:
    """How a source names things: ``columns`` maps a field (prompt, chosen, ...) to the column that holds it,
    ``roles`` renames message roles (e.g. ShareGPT's ``{human: user, gpt: assistant}``)."""

    columns: Mapping[str, str] = field(default_factory=dict)
    roles: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Rows:
    """The validated rows of one source, and the rows left out: reason -> row numbers."""

    rows: list[Row]
    dropped: dict[str, list[int]] = field(default_factory=dict)


def read_rows(path: str, split: str = "train", config_name: Optional[str] = None, fmt: RowFormat = RowFormat()) -> Rows:
    """Read and validate every record of ``path``; all rows have one form (pairs, or unpaired examples)."""
    out = validated_rows(records(path, split, config_name), path, fmt)
    if not out.rows and not out.dropped:
        raise DataError.at(path, None, None, "no rows found (the file is empty)")
    return out


def validated_rows(numbered: Iterable[tuple[int, Any]], path: str, fmt: RowFormat = RowFormat()) -> Rows:
    """``(row number, record)`` pairs as validated rows of one form; the unusable ones counted in ``dropped``."""
    out = Rows([])
    for number, record in numbered:
        row = parse_row(record, path, number, fmt)
        if out.rows and type(row) is not type(out.rows[0]):
            raise mixed_forms(path, number, out.rows[0].row, isinstance(out.rows[0], UnpairedRow))
        reason = unusable_reason(row)
        if reason is None:
            out.rows.append(row)
        else:
            out.dropped.setdefault(reason, []).append(number)
    return out


def mixed_forms(path: str, row: int, first_row: int, first_unpaired: bool) -> DataError:
    """The error for a row whose form (pair or unpaired) differs from that of ``first_row``, the source's first."""
    first = "prompt/completion/label" if first_unpaired else "prompt/chosen/rejected"
    return DataError.at(path, row, None, f"mixes row forms: row {first_row} has {first}, this one not")


def unusable_reason(row: Row) -> Optional[str]:
    """Why a valid row cannot train anything, or None: an empty completion, or two identical ones."""
    completions = [row.completion] if isinstance(row, UnpairedRow) else [row.chosen, row.rejected]
    if any(is_blank(completion) for completion in completions):
        return "empty completion"
    if isinstance(row, PairRow) and row.chosen == row.rejected:
        return "identical completions"
    return None


def parse_row(record: Any, source: str = "<rows>", row: int = 0, fmt: RowFormat = RowFormat()) -> Row:
    """One record (a dict read from a file) as a validated row."""
    if not isinstance(record, dict):
        raise DataError.at(source, row, None, f"expected an object with fields {FIELDS}, got {type(record).__name__}")
    record = mapped_columns(record, fmt.columns, source, row)
    tools = _tools(record.get("tools"), source, row)
    images = row_images(record, source, row) if has_images(record) else ()
    if "completion" in record and "chosen" not in record:
        fields = {name: field_value(record, name, source, row, fmt, images) for name in (*UNPAIRED_FIELDS, "label")}
        _same_kind(fields, UNPAIRED_FIELDS, source, row, tools)
        fields["prompt"] = with_image_parts(fields["prompt"], images, source, row)
        desirable = _label(fields["label"], source, row)
        return UnpairedRow(fields["prompt"], fields["completion"], desirable, source, row, tools, images)
    if "prompt" not in record and images:  # a prompt split off the answers would hold no image
        raise DataError.at(source, row, "prompt", "missing; rows with images need one (TRL's vision format)"
                           + _prompt_column_hint(record))  # fmt: skip
    if "prompt" not in record and "chosen" in record and "rejected" in record:
        record = _with_implicit_prompt(record, source, row, fmt)
    fields = {name: field_value(record, name, source, row, fmt, images) for name in FIELDS}
    _same_kind(fields, FIELDS, source, row, tools)
    fields["prompt"] = with_image_parts(fields["prompt"], images, source, row)
    return PairRow(fields["prompt"], fields["chosen"], fields["rejected"], source, row, tools, images)


def with_image_parts(prompt: Text, images: tuple[bytes, ...], source: str, row: int) -> Text:
    """A conversational prompt holding one ``{"type": "image"}`` part per image. Where the row's first user message
    is plain text, the images' parts go before it (TRL's ``prepare_multimodal_messages``), so rows whose messages
    name no image work as in TRL. A string prompt's image tokens are the processor's, counted when it is tokenized."""
    if not isinstance(prompt, list):
        return prompt
    first = next((i for i, m in enumerate(prompt) if m["role"] == "user"), None)
    if images and first is not None and isinstance(prompt[first]["content"], str):
        parts = [{"type": "image"}] * len(images) + [{"type": "text", "text": prompt[first]["content"]}]
        prompt = [*prompt[:first], {**prompt[first], "content": parts}, *prompt[first + 1 :]]
    if image_parts(prompt) != len(images):
        raise DataError.at(source, row, "prompt", f"has {image_parts(prompt)} image parts for {len(images)} images; "
                           "each image needs a {\"type\": \"image\"} part where it goes")  # fmt: skip
    return prompt


def mapped_columns(record: dict[str, Any], columns: Mapping[str, str], source: str, row: int) -> dict[str, Any]:
    for name, column in columns.items():
        if column not in record:
            raise DataError.at(source, row, name, f"missing (mapped to column '{column}' by --data.columns)")
    return {**record, **{name: record[column] for name, column in columns.items()}}


def field_value(
    record: dict[str, Any], name: str, source: str, row: int, fmt: RowFormat, images: tuple[bytes, ...] = ()
) -> Any:
    if name not in record:
        raise DataError.at(source, row, name, "missing")
    value = record[name]
    if name == "label":
        return value
    if isinstance(value, str):
        if has_invalid_utf8(value):
            raise DataError.at(source, row, name, "holds bytes that are not valid UTF-8")
        return value
    if value is None:
        raise DataError.at(source, row, name, "is null; expected a string or a list of messages")
    if not isinstance(value, list):
        raise DataError.at(source, row, name, f"expected a string or a list of messages, got {type(value).__name__}")
    if not value:
        raise DataError.at(source, row, name, "is an empty message list")
    messages = normalized_messages(value, source, row, name, fmt.roles, images=bool(images) and name == "prompt")
    if any(has_invalid_utf8(text_of(m["content"])) for m in messages):
        raise DataError.at(source, row, name, "holds bytes that are not valid UTF-8")
    return messages


def _same_kind(fields: dict[str, Any], names: tuple[str, ...], source: str, row: int, tools: Optional[list]) -> None:
    kinds = {isinstance(fields[name], list) for name in names}
    if len(kinds) > 1:
        raise DataError.at(source, row, None, f"mixes strings and message lists; use one format for {'/'.join(names)}")
    if tools is not None and kinds == {False}:
        raise DataError.at(source, row, "tools", "needs conversational rows (message lists) for the chat template")


def _prompt_column_hint(record: dict[str, Any]) -> str:
    """How to read the prompt from a column that looks like one (RLAIF-V's ``question``, say)."""
    column = next((name for name in ("question", "instruction", "query", "input") if name in record), None)
    return f"; to read it from column '{column}', pass --data.columns='{{prompt: {column}}}'" if column else ""


def _with_implicit_prompt(record: dict[str, Any], source: str, row: int, fmt: RowFormat) -> dict[str, Any]:
    """The prompt left implicit in ``chosen`` and ``rejected`` (shared leading messages or text), split off."""
    chosen, rejected = (field_value(record, name, source, row, fmt) for name in ("chosen", "rejected"))
    if isinstance(chosen, list) and isinstance(rejected, list):
        prompt, chosen, rejected = split_shared_messages(chosen, rejected)
        what = "messages"
    elif isinstance(chosen, str) and isinstance(rejected, str):
        prompt, chosen, rejected = split_shared_text(chosen, rejected) if chosen[:1] == rejected[:1] else ("", "", "")
        what = "text"
    else:
        return record  # the checks that follow name the problem
    if not prompt:
        raise DataError.at(source, row, "prompt", f"missing, and chosen/rejected share no leading {what} to use as one"
                           + _prompt_column_hint(record))  # fmt: skip
    return record | {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _tools(value: Any, source: str, row: int) -> Optional[list]:
    if value is None:
        return None
    if isinstance(value, str):  # data sets often store the schemas as a JSON string
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataError.at(source, row, "tools", f"invalid JSON ({err.msg})") from None
    if not isinstance(value, list) or not all(isinstance(tool, dict) for tool in value):
        raise DataError.at(source, row, "tools", "expected a list of function schemas (objects)")
    return value


def _label(label: Any, source: str, row: int) -> bool:
    key = label.strip().lower() if isinstance(label, str) else label
    if not isinstance(key, (bool, int, str)) or key not in _LABELS:  # not 1.0 (== 1 as a key), not a list
        raise DataError.at(source, row, "label", f"expected true or false, got {label!r:.40}")
    return _LABELS[key]
