"""The data report: what a run would train on, before any model loads (``python -m lit_dpo.data``).

Rows per source, what was truncated or dropped and why, token lengths, duplicates, and the first example with
the prompt/completion boundary marked: what to check before spending GPU hours on a chat template.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lit_dpo.data.datamodule import PreferenceDataModule
from lit_dpo.data.examples import digests
from lit_dpo.data.prepare import row_list
from lit_dpo.data.tokenize import Example
from lit_dpo.data.vision import feature_token

PERCENTILES = (50, 90, 99, 100)


def build_report(data: PreferenceDataModule) -> dict[str, Any]:
    """The report of a set-up data module, as plain data (what ``--output`` writes as JSON)."""
    limits = data.limits
    train = data.stream.first_window().examples if data.stream is not None else data.train_examples  # streamed
    return {
        "tokenizer": data.tokenizer_source()[0],
        "limits": {
            "max_length": limits.max_length,
            "max_prompt_length": limits.max_prompt_length,
            "truncation": limits.truncation,
        },  # fmt: skip
        "sources": [
            {
                "name": log.name,
                "path": log.path,
                "stage": log.stage,
                "rows": log.rows,
                "kept": log.kept,
                "truncated": _rows(log.truncated),
                "dropped": {reason: _rows(rows) for reason, rows in log.dropped.items()},
                "tokens": {name: _percentiles(values) for name, values in log.lengths.items()},
            }  # fmt: skip
            for log in data.logs
        ],
        "duplicates": {
            "train": _repeats(train),
            "val": _repeats(data.val_examples),
            "val_in_train": _overlap(train, data.val_examples),
        },  # fmt: skip
        "first_example": _rendered(data, (train or data.val_examples)[0]),
    }


def print_report(report: dict[str, Any], console: Console) -> None:
    """The report as Rich tables."""
    limits = report["limits"]
    console.print(f"[bold]lit_dpo data report[/bold]  tokenizer {report['tokenizer']}, max_length "
                  f"{limits['max_length']}, max_prompt_length {limits['max_prompt_length']}, truncation "
                  f"{limits['truncation']}")  # fmt: skip
    rows = Table("source", "stage", "rows", "kept", "truncated", "dropped (why: first rows)", title="Rows")
    tokens = Table("source", "stage", "field", *map(_label, PERCENTILES),
                   title="Tokens per row (before the length limits)")  # fmt: skip
    for source in report["sources"]:
        dropped = "\n".join(f"{why}: {d['count']} ({row_list(d['rows'])})" for why, d in source["dropped"].items())
        truncated = source["truncated"]
        rows.add_row(source["name"], source["stage"], str(source["rows"]), str(source["kept"]),
                     f"{truncated['count']}" + (f" ({row_list(truncated['rows'])})" if truncated["count"] else ""),
                     dropped or "0")  # fmt: skip
        for name, values in source["tokens"].items():
            tokens.add_row(source["name"], source["stage"], name, *(str(values[_label(p)]) for p in PERCENTILES))
    console.print(rows, tokens)
    duplicates = report["duplicates"]
    console.print(f"Duplicate pairs: {duplicates['train']} in train, {duplicates['val']} in val; "
                  f"{duplicates['val_in_train']} val pairs also in train")  # fmt: skip
    example = report["first_example"]
    console.print(f"\n[bold]First example[/bold] ({example['source']}, row {example['row']}); the prompt ends at "
                  "[reverse]|[/reverse], each completion starts after it:")  # fmt: skip
    for name, completion in example["completions"].items():
        line = Text(f"--- {name} ---\n", style="bold")
        line.append(example["prompt"], style="dim")
        line.append("|", style="reverse")
        line.append(completion, style="green" if name in ("chosen", "completion") else "red")
        console.print(line)


def _rows(numbers: Sequence[int], first: int = 10) -> dict[str, Any]:
    return {"count": len(numbers), "rows": [int(n) for n in numbers[:first]]}


def _percentiles(values: Sequence[int]) -> dict[str, int]:
    ordered = np.sort(np.asarray(values))
    n = len(ordered)
    return {_label(p): int(ordered[min(n - 1, n * p // 100)]) for p in PERCENTILES} if n else {}


def _label(percentile: int) -> str:
    return "max" if percentile == 100 else f"p{percentile}"


def _repeats(examples: Sequence[Example]) -> int:
    """Examples whose token ids (prompt and completions) an earlier example already has."""
    return len(examples) - len(np.unique(digests(examples)))


def _overlap(train: Sequence[Example], val: Sequence[Example]) -> int:
    return int(np.isin(digests(val), digests(train)).sum())


def _rendered(data: PreferenceDataModule, example: Example) -> dict[str, Any]:
    decode = data.tokenizer.decode
    prompt = decode(example.prompt_ids)
    if data.processor is not None:  # an image's tokens, shown as one placeholder with their count
        token = feature_token(data.processor)[0]
        prompt = re.sub(f"(?:{re.escape(token)})+", lambda run: f"{token}x{len(run[0]) // len(token)}", prompt)
    return {
        "source": data.source_names[example.source],
        "row": example.row,
        "prompt": prompt,
        "completions": {name: decode(ids) for name, ids in example.completions.items()},
    }
