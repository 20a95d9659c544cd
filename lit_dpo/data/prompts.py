"""Prompts to generate from, for online DPO and the win-rate: rows with a ``prompt`` (a string, or a list of
messages) and any other columns a judge reads (an ``answer`` to check against, say), as TRL's reward functions
take data set columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

from lit_dpo.data.files import records
from lit_dpo.data.images import IMAGE_COLUMNS, has_images, row_images
from lit_dpo.data.messages import is_blank
from lit_dpo.data.rows import RowFormat, Text, field_value, mapped_columns, with_image_parts
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
    images: tuple[bytes, ...] = ()  # the prompt's images, encoded, for a vision-language model


class PromptRow(NamedTuple):
    """One row of a prompts file, validated: its prompt, its other columns (for a judge), its number and images."""

    prompt: Text
    columns: dict[str, Any]
    row: int
    images: tuple[bytes, ...] = ()  # TRL's vision format: ``images`` or ``image`` (``lit_dpo.data.images``)


def read_prompts(
    path: str, split: str = "train", config_name: Optional[str] = None, fmt: RowFormat = RowFormat()
) -> list[PromptRow]:
    """Every row of ``path``; a bad prompt (or image) is a ``DataError`` naming the file, the row and the field
    (checked as a preference row's prompt is, and never blank)."""
    prompt_column = fmt.columns.get("prompt", "prompt")
    rows = []
    for number, record in records(path, split, config_name):
        if not isinstance(record, dict):
            raise DataError.at(path, number, None, f"expected an object with a prompt, got {type(record).__name__}")
        mapped = mapped_columns(record, fmt.columns, path, number)
        images = row_images(mapped, path, number) if has_images(mapped) else ()
        prompt = field_value(mapped, "prompt", path, number, fmt, images)
        if is_blank(prompt):
            raise DataError.at(path, number, "prompt", "holds no text")
        prompt = with_image_parts(prompt, images, path, number)
        columns = {k: v for k, v in record.items() if k != prompt_column and k not in IMAGE_COLUMNS}
        rows.append(PromptRow(prompt, columns, number, images))
    if not rows:
        raise DataError.at(path, None, None, "no rows found (the file is empty)")
    return rows
