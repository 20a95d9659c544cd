"""Judges of generations, in TRL's two conventions, and the win-rate of the policy against the reference.

- A *reward function* ``f(prompts, completions, **columns) -> list[float]`` scores each completion (higher is
  better); it may also take the row's ``chosen`` and ``rejected`` answers as keyword arguments, as TRL's reward
  functions take dataset columns.
- A *pairwise judge*, an object with ``judge(prompts, completions_pairs) -> list[int]``: the index (0 or 1) of the
  better completion of each pair, -1 for a tie (TRL's ``BasePairwiseJudge``).

Built in: ``reference_answer`` (token F1 against the row's chosen and rejected answers: a cheap, offline proxy),
``exact_answer`` (a verifiable reward: the row's ``answer`` column, checked) and ``reward_model:<folder or Hub id>``
(a Hugging Face sequence-classification reward model).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import random
import re
import sys
from collections import Counter
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from lit_dpo.errors import InputError

Judge = Any  # a reward function or a pairwise judge object


def token_f1(text: str, answer: str) -> float:
    """SQuAD's token F1 of ``text`` against ``answer``: lower-cased words, overlap counted with multiplicity."""
    words, expected = re.findall(r"\w+", text.lower()), re.findall(r"\w+", answer.lower())
    common = sum((Counter(words) & Counter(expected)).values())
    if not common:
        return 0.0
    precision, recall = common / len(words), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def reference_answer(
    prompts: list[str], completions: list[str], chosen: list[str], rejected: list[str], **_: Any
) -> list[float]:
    """Reward: how much closer a completion is to the row's chosen answer than to its rejected one, by token F1
    (in [-1, 1]). A proxy for the data set's preference that needs no model; it rewards wording, not truth."""
    return [token_f1(c, good) - token_f1(c, bad) for c, good, bad in zip(completions, chosen, rejected)]


def exact_answer(prompts: list[Any], completions: list[str], answer: list[Any], **_: Any) -> list[float]:
    """Verifiable reward against the row's ``answer`` column: 1.0 when a numeric answer is the completion's last
    number (the final answer, as GSM8K is graded) or another answer appears in it as whole words (any case),
    else 0.0. A rule, not a judge of style: a completion can ramble and still score."""
    return [float(_has_answer(c, str(a))) for c, a in zip(completions, answer)]


def _has_answer(completion: str, answer: str) -> bool:
    if _NUMBER.fullmatch(answer.strip()):
        numbers = _NUMBER.findall(completion.replace(",", ""))
        return bool(numbers) and float(numbers[-1]) == float(answer.strip())
    return re.search(rf"(?<!\w){re.escape(answer.strip())}(?!\w)", completion, re.IGNORECASE) is not None


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class RewardModel:
    """A Hugging Face sequence-classification reward model (one logit per text; higher is better), applied to
    each prompt with its completion, through the model's chat template when it has one."""

    def __init__(self, name_or_path: str, batch_size: int = 8, device: Optional[str] = None) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path).eval()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            texts = [self._as_text(p, c) for p, c in zip(prompts[chunk], completions[chunk])]
            inputs = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True).to(self.device)
            scores += self.model(**inputs).logits[:, 0].float().tolist()
        return scores

    def _as_text(self, prompt: Any, completion: str) -> str:
        if self.tokenizer.chat_template:
            asked = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            messages = [*asked, {"role": "assistant", "content": completion}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        return text + completion


@contextlib.contextmanager
def _working_directory_importable() -> Iterator[None]:
    """The working directory on ``sys.path`` for one import, as ``python -m`` has it, unless Python runs with
    ``PYTHONSAFEPATH`` (``-P``); ``sys.path`` is as it was afterwards."""
    added = not sys.flags.safe_path and "" not in sys.path
    if added:
        sys.path.insert(0, "")
    try:
        yield
    finally:
        if added:
            sys.path.remove("")


def load_judge(name: str) -> Judge:
    """``reference_answer``, ``reward_model:<path or id>``, or a dotted import path (``mypkg.judges.helpful``,
    importable from the working directory) to a reward function, a pairwise judge, or a class of either."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    if name.startswith("reward_model:"):
        return RewardModel(name.split(":", 1)[1])
    module_name, _, attribute = name.rpartition(".")
    try:
        with _working_directory_importable():
            judge = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as err:
        raise InputError(f"judge {name!r}: cannot import it ({err})") from None
    if inspect.isclass(judge):
        judge = judge()
    if not (callable(judge) or callable(getattr(judge, "judge", None))):
        raise InputError(f"judge {name!r}: neither a reward function nor an object with a judge() method")
    return judge


def wins(
    judge: Judge, prompts: list[str], policy: list[str], reference: list[str], columns: dict[str, list[str]], seed: int
) -> list[float]:
    """Per prompt: 1 if the policy's completion is judged better than the reference's, 0.5 for a tie, else 0.
    A pairwise judge sees each pair in a random (seeded) order, so that a bias for one position cancels out."""
    if not prompts:  # a rank with no prompts (fewer than the ranks): the judge is not called with nothing
        return []
    if callable(getattr(judge, "judge", None)):
        return wins_of_first(judge, prompts, policy, reference, seed)
    scores_policy = _scores(judge, _call(judge, prompts, policy, columns), len(policy))
    scores_reference = _scores(judge, _call(judge, prompts, reference, columns), len(reference))
    return [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores_policy, scores_reference)]


def wins_of_first(judge: Judge, prompts: list[Any], first: list[str], second: list[str], seed: int) -> list[float]:
    """A pairwise judge's verdicts as 1 (the first completion is better), 0.5 (a tie) or 0, each pair shown in a
    random (seeded) order, so that a bias for one position cancels out."""
    flips = [random.Random(seed + i).random() < 0.5 for i in range(len(prompts))]
    pairs = [[b, a] if flip else [a, b] for a, b, flip in zip(first, second, flips)]
    picks = _picks(judge, judge.judge(prompts, pairs), len(pairs))
    return [0.5 if pick not in (0, 1) else float(pick == (1 if flip else 0)) for pick, flip in zip(picks, flips)]


def _call(function: Callable, prompts: list[str], completions: list[str], columns: dict[str, Sequence]) -> list:
    parameters = inspect.signature(function).parameters.values()
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    names = {p.name for p in parameters}
    extra = {k: v for k, v in columns.items() if takes_all or k in names}
    return list(function(prompts=prompts, completions=completions, **extra))


def _scores(judge: Judge, values: Any, count: int) -> list[float]:
    """A reward function's scores, checked: one finite number per completion. NaN is an error, not "skip": a
    judge that cannot score a completion must say so with a number (e.g. the lowest score)."""
    values = list(values)
    if len(values) != count:
        raise InputError(f"judge {_name(judge)} returned {len(values)} scores for {count} completions")
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_number_tensor(value):
            raise InputError(f"judge {_name(judge)}: score {i} is {value!r:.40}, not a number")
        if not math.isfinite(float(value)):
            raise InputError(f"judge {_name(judge)}: score {i} is {float(value)}; every score must be finite")
    return [float(value) for value in values]


def _picks(judge: Judge, values: Any, count: int) -> list[int]:
    """A pairwise judge's picks, checked: one per pair, 0 (the first), 1 (the second) or -1 (a tie)."""
    values = list(values)
    if len(values) != count:
        raise InputError(f"judge {_name(judge)} returned {len(values)} picks for {count} pairs")
    for i, value in enumerate(values):
        if isinstance(value, bool) or value not in (0, 1, -1):
            raise InputError(f"judge {_name(judge)}: pick {i} is {value!r:.40}; a pairwise judge answers 0, 1 or -1")
    return [int(value) for value in values]


def _is_number_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_complex


def _name(judge: Judge) -> str:
    return getattr(judge, "__qualname__", None) or type(judge).__name__


BUILT_IN = {"reference_answer": reference_answer, "exact_answer": exact_answer}


def score_samples(
    judge: Judge, prompts: list[Any], samples: list[list[str]], columns: list[dict[str, Any]], seed: int
) -> list[list[float]]:
    """Scores of each prompt's samples (higher is better). A reward function scores every sample with the row's
    columns; a pairwise judge compares every two samples of a prompt (in a seeded random order) and a sample
    scores its wins, ties counting half."""
    if not samples:  # a rank with no prompts (fewer than the ranks): the judge is not called with nothing
        return []
    if callable(getattr(judge, "judge", None)):
        return [_tournament(judge, prompt, group, seed + i) for i, (prompt, group) in enumerate(zip(prompts, samples))]
    flat_prompts = [p for p, group in zip(prompts, samples) for _ in group]
    keys = sorted({key for row in columns for key in row})
    flat_columns = {k: [row.get(k) for row, group in zip(columns, samples) for _ in group] for k in keys}
    flat = [c for group in samples for c in group]
    scores = _scores(judge, _call(judge, flat_prompts, flat, flat_columns), len(flat))
    out, start = [], 0
    for group in samples:
        out.append(scores[start : start + len(group)])
        start += len(group)
    return out


def _tournament(judge: Judge, prompt: Any, samples: list[str], seed: int) -> list[float]:
    pairs = [(i, j) for i in range(len(samples)) for j in range(i + 1, len(samples))]
    if not pairs:
        return [0.0] * len(samples)
    wins = wins_of_first(judge, [prompt] * len(pairs), [samples[i] for i, _ in pairs], [samples[j] for _, j in pairs],
                         seed)  # fmt: skip
    score = [0.0] * len(samples)
    for (i, j), win in zip(pairs, wins):
        score[i] += win
        score[j] += 1 - win
    return score
