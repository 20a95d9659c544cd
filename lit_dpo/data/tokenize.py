"""Rows -> token ids: boundary-safe tokenization of a prompt and its completions, and the length limits.

The prompt is tokenized once and every completion continues it, so chosen and rejected share exactly the same
prompt tokens. As in TRL, each completion's tokens are read off the tokenization of prompt + completion (what
the model sees at inference), starting where that diverges from the prompt alone. Paired and unpaired rows take
the same path: a prompt with two completions, or with one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Optional, Sequence, Union

from transformers import PreTrainedTokenizerBase

from lit_dpo.data.continuation import encode_continuations
from lit_dpo.data.images import decoded
from lit_dpo.data.rows import PairRow, Row, Text, UnpairedRow
from lit_dpo.errors import DataError

Truncation = Literal["error", "keep_start", "drop"]


@dataclass
class Pair:
    """A tokenized preference pair: both completions continue the same prompt tokens."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    weight: float = 1.0  # in the metrics: 0 for the copies that only even out ranks (``pad_for_ranks``)
    index: int = 0  # position among the data module's examples (train, then val): the key of cached reference logps
    source: int = 0  # which of the data module's sources it came from
    row: int = 0  # its row number there
    images: tuple[bytes, ...] = ()  # the prompt's images, encoded, for a vision-language model

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
    source: int = 0
    row: int = 0
    images: tuple[bytes, ...] = ()

    @property
    def completions(self) -> dict[str, list[int]]:
        return {"completion": self.completion_ids}


Example = Union[Pair, UnpairedExample]
Problem = tuple[str, str]  # (field, what is wrong), for a one-line error or a counted warning


def tokenize_row(tokenizer: PreTrainedTokenizerBase, row: Row) -> Example:
    """Token ids of one validated row (``tokenize_rows`` of one)."""
    return tokenize_rows(tokenizer, [row])[0]


def tokenize_rows(tokenizer: PreTrainedTokenizerBase, rows: Sequence[Row], processor: Any = None) -> list[Example]:
    """Token ids of validated rows, encoded in batch calls (many rows at once run in the tokenizer's threads,
    without a Python round trip per text), each prompt tokenized once (``encode_continuations``).

    Standard rows get the EOS token appended to each completion; conversational rows get the chat template (with
    the row's ``tools``), whose end-of-turn token closes each completion. Rows with images need a vision-language
    model's ``processor``: its chat template places the image tokens, and it expands each into the image's tokens
    in the prompt (``with_image_tokens``); completions hold no images.
    """
    pictured = next((row for row in rows if row.images), None)
    if pictured is not None and processor is None:  # validated (lit_dpo.data.images), but a text model cannot
        raise _text_only(pictured.source, pictured.row)
    renderer = processor if processor is not None else tokenizer  # whose chat template renders messages
    prompts = [_prompt_text(renderer, row) for row in rows]
    completions = [_completions(row) for row in rows]
    fulls = [_rendered(renderer, tokenizer.eos_token, row, prompt, completions[i]) for i, (row, prompt) in
             enumerate(zip(rows, prompts))]  # fmt: skip
    special = [not isinstance(row.prompt, list) for row in rows]  # a chat template writes its own special tokens
    prompt_ids, full_ids = encode_continuations(tokenizer, prompts, special, fulls, encode)
    examples = []
    for i, (row, ids, full) in enumerate(zip(rows, prompt_ids, full_ids)):
        # tokens can merge across the prompt/completion boundary; cut every sequence where the first one diverges
        shared = min(_common_prefix(ids, each) for each in full)
        example = _example(row, ids[:shared], [each[shared:] for each in full])
        if row.images:
            example = with_image_tokens(processor, row, example, prompts[i], len(ids) - shared, special[i])
        examples.append(example)
    return examples


def with_image_tokens(processor: Any, row: Row, example: Example, prompt: str, cut: int, special: bool) -> Example:
    """``example`` with its prompt as the processor encodes it with the row's images (each image token expanded
    into the image's tokens: tiles, rows, separators), less the ``cut`` tokens merged into the completions."""
    expanded = _expanded(processor, prompt, row.images, special, row.source, row.row)
    expanded = expanded[: len(expanded) - cut]
    ids = example.prompt_ids  # the tokenizer's, each image token one token: what follows the last one must agree
    last = max((i for i, token in enumerate(ids) if token == processor.image_token_id), default=None)
    tail = ids[last + 1 :] if last is not None else ids
    if last is None or (tail and expanded[-len(tail) :] != tail):
        raise DataError.at(row.source, row.row, "prompt", "the processor encodes the prompt otherwise than its "
                           "tokenizer does around the images; lit_dpo cannot place the completions after it")  # fmt: skip
    return replace(example, prompt_ids=expanded, images=row.images)


def _text_only(source: str, row: int) -> DataError:
    return DataError.at(source, row, "images", "rows with images need a vision-language model (its processor "
                        "places and expands the image tokens); this model is text-only")  # fmt: skip


def _expanded(
    processor: Any, prompt: str, images: tuple[bytes, ...], special: bool, source: str, row: int
) -> list[int]:
    """The prompt's ids as the processor encodes it with its images: each image token expanded."""
    token = processor.image_token
    if prompt.count(token) != len(images):
        raise DataError.at(source, row, "prompt", f"holds {prompt.count(token)} image tokens ({token}) for "
                           f"{len(images)} images")  # fmt: skip
    pictures = [[decoded(data) for data in images]]
    return list(processor(text=[prompt], images=pictures, add_special_tokens=special)["input_ids"][0])


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], special: list[bool]) -> list[list[int]]:
    """``tokenizer(text, add_special_tokens=...)["input_ids"]`` of every text, in at most two batch calls."""
    out: list[list[int]] = [[] for _ in texts]
    for flag in (True, False):
        chosen = [i for i, s in enumerate(special) if s is flag]
        if chosen:
            for i, ids in zip(chosen, _encode_batch(tokenizer, [texts[i] for i in chosen], flag)):
                out[i] = ids
    return out


def _encode_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str], special: bool) -> list[list[int]]:
    backend = tokenizer.backend_tokenizer if tokenizer.is_fast else None
    if backend is not None and backend.truncation is None and backend.padding is None:
        # what transformers' __call__ runs for a fast tokenizer, without building its per-text Python objects
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=special)]
    return tokenizer(texts, add_special_tokens=special)["input_ids"]


def _completions(row: Row) -> dict[str, Text]:
    if isinstance(row, UnpairedRow):
        return {"completion": row.completion}
    assert isinstance(row, PairRow)
    return {"chosen": row.chosen, "rejected": row.rejected}


def _example(row: Row, prompt_ids: list[int], completion_ids: list[list[int]]) -> Example:
    if isinstance(row, UnpairedRow):
        return UnpairedExample(prompt_ids, completion_ids[0], row.desirable, row=row.row)
    return Pair(prompt_ids, completion_ids[0], completion_ids[1], row=row.row)


def tokenize_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Text, tools: Optional[list] = None) -> list[int]:
    """The prompt's token ids as a completion follows them: the chat template with the generation prompt for
    messages, the tokenizer's own special tokens for text."""
    if isinstance(prompt, list):
        text = _render(tokenizer, prompt, tools, generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def tokenize_image_prompt(
    processor: Any, prompt: Text, images: tuple[bytes, ...], source: str, row: int, tools: Optional[list] = None
) -> list[int]:
    """``tokenize_prompt`` of a prompt with images: the processor's chat template, each image token expanded."""
    if processor is None:
        raise _text_only(source, row)
    if isinstance(prompt, list):
        return _expanded(
            processor, _render(processor, prompt, tools, generation_prompt=True), images, False, source, row
        )
    return _expanded(processor, _images_first(processor, prompt, len(images)), images, True, source, row)


def _prompt_text(tokenizer: Any, row: Row) -> str:
    """The prompt as a completion follows it: the chat template with the generation prompt for messages."""
    if isinstance(row.prompt, list):
        return _render(tokenizer, row.prompt, row.tools, generation_prompt=True)
    return _images_first(tokenizer, row.prompt, len(row.images))


def _images_first(processor: Any, prompt: str, images: int) -> str:
    """A string prompt with images but no image token: the images' tokens before its text, where messages that
    name no image get their images (``rows.with_image_parts``)."""
    if images and processor.image_token not in prompt:
        return processor.image_token * images + prompt
    return prompt


def _rendered(tokenizer: Any, eos: str, row: Row, prompt: str, completions: dict[str, Text]) -> list[str]:
    """Prompt + each completion as the model reads it: the chat template over both, or the strings with EOS."""
    if not isinstance(row.prompt, list):
        return [prompt + (text if text.endswith(eos) else text + eos) for text in completions.values()]
    texts = []
    for name, completion in completions.items():
        full = _render(tokenizer, row.prompt + completion, row.tools)
        if not full.startswith(prompt):  # else template text would be scored as the completion
            at = next(i for i, (a, b) in enumerate(zip(prompt + "\0", full + "\0")) if a != b)
            raise DataError.at(
                row.source, row.row, name,
                f"the chat template renders the prompt alone ({prompt[at:at + 40]!r}) differently from the prompt "
                f"before the {name} ({full[at:at + 40]!r}) at character {at}: templates that add or drop text in "
                "earlier turns (e.g. thinking templates) cannot split prompt from completion; use one that renders "
                "turns alike",
            )  # fmt: skip
        texts.append(full)
    return texts


def _render(tokenizer: Any, messages: list, tools: Optional[list], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt)


def fit_length(
    example: Example, max_length: Optional[int], max_prompt_length: Optional[int], truncation: Truncation
) -> tuple[Optional[Example], Optional[Problem]]:
    """Apply the length limits to one tokenized example: ``(example, problem)``.

    ``problem`` names the field over a limit (the prompt, or the longest completion), else it is None. The
    caller raises it when ``truncation="error"``; ``"drop"`` returns no example; ``"keep_start"`` keeps the end
    of the prompt (up to ``max_prompt_length``, and half of ``max_length`` when the prompt alone would fill it)
    and the start of each completion.
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
        if len(prompt) >= max_length:  # keep the prompt's end, and room for the completions (TRL: 512 of 1024)
            prompt = prompt[len(prompt) - max_length // 2 :]
        completions = {name: ids[: max_length - len(prompt)] for name, ids in completions.items()}
    return replace(example, prompt_ids=prompt, **{f"{name}_ids": ids for name, ids in completions.items()}), problem


def _common_prefix(a: list[int], b: list[int]) -> int:
    if b[: len(a)] == a:  # the usual case, compared in C
        return len(a)
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
