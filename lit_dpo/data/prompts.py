"""Prompts to generate from, for online DPO and the win-rate: rows with a ``prompt`` (a string, or a list of
messages) and any other columns a judge reads (an ``answer`` to check against, say), as TRL's reward functions
take data set columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from lit_dpo.data.files import has_invalid_utf8, records
from lit_dpo.data.messages import is_blank, normalized_messages
from lit_dpo.data.rows import RowFormat, Text
from lit_dpo.data.tokenize import _render
from lit_dpo.errors import DataError


@dataclass
class Prompt:
    """A tokenized prompt: ``prompt_ids`` to generate from, ``prompt`` as the row gives it and ``columns`` (the
    row's other fields) for the judge; ``source`` (the data module's source number) and ``row`` say where it came
    from."""

    prompt_ids: list[int]
    prompt: Text
    columns: dict[str, Any] = field(default_factory=dict)
    source: int = 0
    row: int = 0


def read_prompts(
    path: str, split: str = "train", config_name: Optional[str] = None, fmt: RowFormat = RowFormat()
) -> list[tuple[Text, dict[str, Any], int]]:
    """Every row of ``path`` as ``(prompt, other columns, row number)``; a bad prompt is a ``DataError`` naming
    the file, the row and the field."""
    prompt_column = fmt.columns.get("prompt", "prompt")
    rows = []
    for number, record in records(path, split, config_name):
        if not isinstance(record, dict):
            raise DataError.at(path, number, None, f"expected an object with a prompt, got {type(record).__name__}")
        if prompt_column not in record:
            mapped = f" (mapped to column '{prompt_column}' by --data.columns)" if prompt_column != "prompt" else ""
            raise DataError.at(path, number, "prompt", f"missing{mapped}")
        prompt = _prompt(record[prompt_column], path, number, fmt)
        columns = {k: v for k, v in record.items() if k != prompt_column}
        rows.append((prompt, columns, number))
    if not rows:
        raise DataError.at(path, None, None, "no rows found (the file is empty)")
    return rows


def _prompt(value: Any, source: str, row: int, fmt: RowFormat) -> Text:
    if isinstance(value, str):
        if has_invalid_utf8(value):
            raise DataError.at(source, row, "prompt", "holds bytes that are not valid UTF-8")
        if not value.strip():
            raise DataError.at(source, row, "prompt", "is empty")
        return value
    if not isinstance(value, list) or not value:
        what = "an empty message list" if isinstance(value, list) else type(value).__name__
        raise DataError.at(source, row, "prompt", f"expected a string or a list of messages, got {what}")
    messages = normalized_messages(value, source, row, "prompt", fmt.roles)
    if is_blank(messages) or any(has_invalid_utf8(m["content"]) for m in messages):
        raise DataError.at(source, row, "prompt", "holds no text, or bytes that are not valid UTF-8")
    return messages


def tokenize_prompt(tokenizer: Any, prompt: Text, tools: Optional[list] = None) -> list[int]:
    """The prompt's token ids as a completion would follow them: the chat template with the generation prompt
    for messages, the tokenizer's own special tokens for text (as ``lit_dpo.data.tokenize`` does for pairs)."""
    if isinstance(prompt, list):
        text = _render(tokenizer, prompt, tools, generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]
