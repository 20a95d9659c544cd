"""One round of online DPO, as pure functions: a prompt's judged samples (``Judged``) -> a preference pair of
its best and worst sample, or none when they tie -> the round's pairs, records and statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from lit_dpo.data.prompts import Prompt
from lit_dpo.data.tokenize import Pair


@dataclass
class Judged:
    """One prompt's K samples: token ids, decoded texts and the judge's scores (after any missing-EOS penalty)."""

    prompt: int  # its position in the round's prompts
    samples: list[list[int]]
    texts: list[str]
    scores: list[float]


def best_and_worst(scores: list[float], min_gap: float = 0.0) -> Optional[tuple[int, int]]:
    """The indices of the best and the worst sample (the first of equals), or None when their scores tie or
    differ by less than ``min_gap``: such a prompt says nothing about what to prefer."""
    best = max(range(len(scores)), key=scores.__getitem__)
    worst = min(range(len(scores)), key=scores.__getitem__)
    gap = scores[best] - scores[worst]
    return (best, worst) if gap > 0 and gap >= min_gap else None


def form_pairs(prompts: list[Prompt], judged: list[Judged], min_gap: float) -> tuple[list[Pair], list[dict[str, Any]]]:
    """Best-vs-worst pairs of every prompt that has one (in prompt order), and one record per pair for the round's
    JSONL: prompt, chosen and rejected as the data module reads them back, plus the samples and their scores."""
    pairs, records = [], []
    for item in judged:
        picked = best_and_worst(item.scores, min_gap)
        if picked is None or item.samples[picked[0]] == item.samples[picked[1]]:
            continue
        best, worst = picked
        prompt = prompts[item.prompt]
        pairs.append(Pair(prompt.prompt_ids, item.samples[best], item.samples[worst], index=len(pairs),
                          source=prompt.source, row=prompt.row, images=prompt.images))  # fmt: skip
        records.append({
            "prompt": prompt.prompt, "chosen": _as_completion(prompt, item.texts[best]),
            "rejected": _as_completion(prompt, item.texts[worst]), "chosen_score": item.scores[best],
            "rejected_score": item.scores[worst], "samples": item.texts, "scores": item.scores,
            **{k: v for k, v in prompt.columns.items() if k not in ("chosen", "rejected")},
            **({"images": prompt.images} if prompt.images else {}),  # encoded: the writer stores them as files
        })  # fmt: skip
    return pairs, records


def _as_completion(prompt: Prompt, text: str) -> Any:
    """A completion in the prompt's form: text, or an assistant message after a conversational prompt."""
    return [{"role": "assistant", "content": text}] if isinstance(prompt.prompt, list) else text


def round_stats(judged: list[Judged], pairs: int, prefix: str = "online") -> dict[str, float]:
    """What a round logs: the samples' mean and best score, generation length, pairs formed and their share."""
    scores = [s for item in judged for s in item.scores]
    lengths = [len(sample) for item in judged for sample in item.samples]
    return {
        f"{prefix}/score_mean": sum(scores) / max(len(scores), 1),
        f"{prefix}/score_max": max(scores, default=0.0),
        f"{prefix}/gen_length": sum(lengths) / max(len(lengths), 1),
        f"{prefix}/pairs": float(pairs),
        f"{prefix}/pair_fraction": pairs / max(len(judged), 1),
    }
