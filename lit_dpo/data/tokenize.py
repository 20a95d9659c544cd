"""Rows -> token ids: boundary-safe tokenization of a prompt and its completions, and the length limits.

The prompt is tokenized once and every completion continues it, so chosen and rejected share exactly the same
prompt tokens. As in TRL, each completion's tokens are read off the tokenization of prompt + completion (what
the model sees at inference), starting where that diverges from the prompt alone. Paired and unpaired rows take
the same path: a prompt with two completions, or with one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Optional, Union

from transformers import PreTrainedTokenizerBase

from lit_dpo.data.rows import PairRow, Row, Text, UnpairedRow

Truncation = Literal["error", "keep_start", "drop"]


@dataclass
class Pair:
    """A tokenized preference pair: both completions continue the same prompt tokens."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    weight: float = 1.0  # in the metrics: 0 for the copies that only even out ranks (``pad_for_ranks``)
    index: int = 0  # position among the data module's examples (train, then val): the key of cached reference logps

    @property
    def completions(self) -> dict[str, list[int]]:
        return {"chosen": self.chosen_ids, "rejected": self.rejected_ids}


@dataclass
class UnpairedExample:
    """A tokenized unpaired (KTO) example: one completion of the prompt, desirable or not."""

    prompt_ids: list[int]
    completion_ids: list[int]
    desirable: bool
    weight: float = 1.0
    index: int = 0

    @property
    def completions(self) -> dict[str, list[int]]:
        return {"completion": self.completion_ids}


Example = Union[Pair, UnpairedExample]
Problem = tuple[str, str]  # (field, what is wrong), for a one-line error or a counted warning


def tokenize_row(tokenizer: PreTrainedTokenizerBase, row: Row) -> Example:
    """Token ids of one validated row.

    Standard rows get the EOS token appended to each completion; conversational rows get the chat template,
    whose end-of-turn token closes each completion.
    """
    if isinstance(row, UnpairedRow):
        prompt_ids, (completion_ids,) = tokenize_completions(tokenizer, row.prompt, [row.completion])
        return UnpairedExample(prompt_ids, completion_ids, row.desirable)
    assert isinstance(row, PairRow)
    prompt_ids, (chosen_ids, rejected_ids) = tokenize_completions(tokenizer, row.prompt, [row.chosen, row.rejected])
    return Pair(prompt_ids, chosen_ids, rejected_ids)


def tokenize_completions(
    tokenizer: PreTrainedTokenizerBase, prompt: Text, completions: list[Text]
) -> tuple[list[int], list[list[int]]]:
    """The prompt's token ids, and each completion's token ids after them."""
    if isinstance(prompt, list):
        prompt_ids = _ids(tokenizer, prompt, generation_prompt=True)
        full = [_ids(tokenizer, prompt + completion) for completion in completions]
    else:
        eos = tokenizer.eos_token
        prompt_ids = _ids(tokenizer, prompt)
        full = [_ids(tokenizer, prompt + (c if c.endswith(eos) else c + eos)) for c in completions]
    # tokens can merge across the prompt/completion boundary; cut every sequence where the first one diverges
    shared = min(_common_prefix(prompt_ids, ids) for ids in full)
    return prompt_ids[:shared], [ids[shared:] for ids in full]


def fit_length(
    example: Example, max_length: Optional[int], max_prompt_length: Optional[int], truncation: Truncation
) -> tuple[Optional[Example], Optional[Problem]]:
    """Apply the length limits to one tokenized example: ``(example, problem)``.

    ``problem`` names the field over a limit (the prompt, or the longest completion), else it is None. The
    caller raises it when ``truncation="error"``; ``"drop"`` returns no example; ``"keep_start"`` keeps the end
    of the prompt (up to ``max_prompt_length``) and the start of each completion, and returns no example when
    the prompt alone fills ``max_length``.
    """
    prompt, completions = example.prompt_ids, example.completions
    longest = max(completions, key=lambda name: len(completions[name]))  # the first one on a tie
    total = len(prompt) + len(completions[longest])
    problem = None
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        problem = ("prompt", f"{len(prompt)} tokens > max_prompt_length {max_prompt_length}")
    elif max_length is not None and total > max_length:
        problem = (longest, f"prompt + {longest} is {total} tokens > max_length {max_length}")
    if problem is None or truncation == "error":
        return example, problem
    if truncation == "drop":
        return None, problem
    if max_prompt_length is not None:
        prompt = prompt[-max_prompt_length:] if max_prompt_length > 0 else []
    if max_length is not None:
        if len(prompt) >= max_length:
            return None, problem  # no room left for any completion token: nothing to learn from
        completions = {name: ids[: max_length - len(prompt)] for name, ids in completions.items()}
    return replace(example, prompt_ids=prompt, **{f"{name}_ids": ids for name, ids in completions.items()}), problem


def _ids(tokenizer: PreTrainedTokenizerBase, value: Text, generation_prompt: bool = False) -> list[int]:
    if isinstance(value, list):
        out = tokenizer.apply_chat_template(value, tokenize=True, add_generation_prompt=generation_prompt)
        # transformers 5 returns a BatchEncoding, 4.x a plain list
        return list(out["input_ids"] if hasattr(out, "keys") else out)
    return tokenizer(value)["input_ids"]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
