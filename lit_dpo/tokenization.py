"""Boundary-safe tokenization of preference pairs and the length limits.

The prompt is tokenized once and both completions continue it, so chosen and rejected share exactly the
same prompt tokens. As in TRL, each completion's tokens are read off the tokenization of prompt + completion
(what the model sees at inference), starting where that diverges from the prompt alone.
"""

from __future__ import annotations

from typing import Any, Literal

from transformers import PreTrainedTokenizerBase

Truncation = Literal["error", "keep_start", "drop"]


def _ids(tokenizer: PreTrainedTokenizerBase, value: str | list, generation_prompt: bool = False) -> list[int]:
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


def tokenize_pair(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> dict[str, list[int]]:
    """Token ids ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` of one validated row.

    Standard rows get the EOS token appended to each completion; conversational rows get the chat
    template, whose end-of-turn token closes each completion.
    """
    prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    if isinstance(prompt, list):
        prompt_ids = _ids(tokenizer, prompt, generation_prompt=True)
        chosen_full, rejected_full = _ids(tokenizer, prompt + chosen), _ids(tokenizer, prompt + rejected)
    else:
        eos = tokenizer.eos_token
        chosen = chosen if chosen.endswith(eos) else chosen + eos
        rejected = rejected if rejected.endswith(eos) else rejected + eos
        prompt_ids = _ids(tokenizer, prompt)
        chosen_full, rejected_full = _ids(tokenizer, prompt + chosen), _ids(tokenizer, prompt + rejected)
    # tokens can merge across the prompt/completion boundary; cut both where they first diverge
    shared = min(_common_prefix(prompt_ids, chosen_full), _common_prefix(prompt_ids, rejected_full))
    return {
        "prompt_ids": prompt_ids[:shared],
        "chosen_ids": chosen_full[shared:],
        "rejected_ids": rejected_full[shared:],
    }


def tokenize_unpaired(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> dict[str, Any]:
    """``prompt_ids``, ``completion_ids`` and ``label`` of one validated unpaired (KTO) row, by the same rules."""
    pair = tokenize_pair(
        tokenizer, {"prompt": row["prompt"], "chosen": row["completion"], "rejected": row["completion"]}
    )
    return {"prompt_ids": pair["prompt_ids"], "completion_ids": pair["chosen_ids"], "label": row["label"]}


def fit_length(
    example: dict[str, list[int]],
    max_length: int | None,
    max_prompt_length: int | None,
    truncation: Truncation,
) -> tuple[dict[str, list[int]] | None, tuple[str, str] | None]:
    """Apply the length limits to one tokenized pair.

    Returns ``(example, problem)``: ``problem`` is ``(field, what)`` for a pair over a limit, else ``None``.
    The caller raises it when ``truncation="error"``; ``"drop"`` returns ``None``; ``"keep_start"``
    keeps the end of the prompt (up to ``max_prompt_length``) and the start of each completion, and
    returns ``None`` when the prompt alone fills ``max_length``.
    """
    prompt, chosen, rejected = example["prompt_ids"], example["chosen_ids"], example["rejected_ids"]
    problem = None
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        problem = ("prompt", f"{len(prompt)} tokens > max_prompt_length {max_prompt_length}")
    elif max_length is not None and len(prompt) + max(len(chosen), len(rejected)) > max_length:
        field = "chosen" if len(chosen) >= len(rejected) else "rejected"
        total = len(prompt) + max(len(chosen), len(rejected))
        problem = (field, f"prompt + {field} is {total} tokens > max_length {max_length}")
    if problem is None or truncation == "error":
        return example, problem
    if truncation == "drop":
        return None, problem
    if max_prompt_length is not None:
        prompt = prompt[-max_prompt_length:] if max_prompt_length > 0 else []
    if max_length is not None:
        if len(prompt) >= max_length:
            return None, problem  # no room left for any completion token: nothing to learn from
        room = max_length - len(prompt)
        chosen, rejected = chosen[:room], rejected[:room]
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}, problem
