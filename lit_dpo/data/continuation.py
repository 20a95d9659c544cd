"""Token ids of a prompt and of texts that continue it, without tokenizing the prompt once per continuation.

A pair needs ``tokenize(prompt)``, ``tokenize(prompt + chosen)`` and ``tokenize(prompt + rejected)``: read
naively, three prompts' worth of tokenizing for one, and the prompt is most of a dialogue's text. For byte-level
BPE tokenizers (GPT-2, Llama 3, Qwen2, SmolLM2: no normalizer, a left-to-right regex split, no prefix space),
text before a split boundary is tokenized the same whatever follows it, as long as some non-space text follows
the boundary within the prompt. So each continuation is tokenized from a boundary a few tokens before the
prompt's end, ``tokenize(prompt + x) == tokenize(prompt)[:k] + tokenize(prompt[c:] + x)``, where token ``k``
starts at character ``c``. Each cut is checked (the prompt's own tail must tokenize the same from ``c``), rows
that cannot be cut this way are tokenized whole, other tokenizers always are, and one row in ``CHECK_EVERY`` is
tokenized both ways as a tripwire.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from tokenizers import models

TAIL_TOKENS = 8  # the prompt's last tokens, tokenized again with each continuation
CHECK_EVERY = 64  # one row in this many is also tokenized whole and compared
_LOCAL_SPLITS = ("Split", "Digits", "ByteLevel")  # pre-tokenizer steps whose boundaries depend on earlier text only


def encode_continuations(
    tokenizer: Any, prompts: list[str], special: list[bool], continuations: list[list[str]],
    encode: Any,
) -> tuple[list[list[int]], list[list[list[int]]]]:  # fmt: skip
    """``(ids of each prompt, ids of each of its continuations)``, equal to ``encode`` of each text (with the
    row's ``special`` flag); every continuation starts with its prompt. ``encode(tokenizer, texts, special)``
    is the plain batch encoder."""
    if not splits_locally(tokenizer):
        flat = [text for texts in continuations for text in texts]
        ids = encode(
            tokenizer, prompts + flat, special + [s for s, texts in zip(special, continuations) for _ in texts]
        )
        return ids[: len(prompts)], _regroup(ids[len(prompts) :], continuations)
    encodings = _encodings(tokenizer, prompts, special)
    prompt_ids = [e.ids for e in encodings]
    margin = 1 + max((len(token.content) for token in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()),
                     default=0)  # fmt: skip
    cuts = [_cut(e, prompt, margin) for e, prompt in zip(encodings, prompts)]
    cuts = _checked(tokenizer, prompts, prompt_ids, cuts, encode)
    suffixes = [text[cut[1] :] for cut, texts in zip(cuts, continuations) if cut for text in texts]
    wholes = [text for cut, texts in zip(cuts, continuations) if not cut for text in texts]
    whole_special = [s for cut, s, texts in zip(cuts, special, continuations) if not cut for _ in texts]
    suffix_ids = iter(encode(tokenizer, suffixes, [False] * len(suffixes)))
    whole_ids = iter(encode(tokenizer, wholes, whole_special))
    out = [
        [ids[: cut[0]] + next(suffix_ids) if cut else next(whole_ids) for _ in texts]
        for ids, cut, texts in zip(prompt_ids, cuts, continuations)
    ]  # fmt: skip
    _tripwire(tokenizer, special, continuations, cuts, out, encode)
    return prompt_ids, out


def splits_locally(tokenizer: Any) -> bool:
    """Whether the tokenizer is byte-level BPE whose split boundaries depend only on the text before them."""
    backend = tokenizer.backend_tokenizer if tokenizer.is_fast else None
    if backend is None or backend.normalizer is not None or backend.pre_tokenizer is None:
        return False
    if backend.truncation is not None or backend.padding is not None:
        return False
    steps = json.loads(backend.pre_tokenizer.__getstate__())
    steps = steps.get("pretokenizers", [steps]) if steps.get("type") == "Sequence" else [steps]
    return isinstance(backend.model, models.BPE) and all(
        step.get("type") in _LOCAL_SPLITS and not step.get("add_prefix_space", False) for step in steps
    )


def _encodings(tokenizer: Any, texts: list[str], special: list[bool]) -> list[Any]:
    """The backend's encodings (ids and character offsets), in at most two batch calls."""
    out: list[Any] = [None] * len(texts)
    for flag in (True, False):
        chosen = [i for i, s in enumerate(special) if s is flag]
        encoded = tokenizer.backend_tokenizer.encode_batch([texts[i] for i in chosen], add_special_tokens=flag)
        for i, encoding in zip(chosen, encoded):
            out[i] = encoding
    return out


def _cut(encoding: Any, prompt: str, margin: int) -> Optional[tuple[int, int]]:
    """``(k, c)``: token ``k`` of the prompt starts at character ``c``, a boundary to continue from; or None."""
    k = len(encoding.ids) - TAIL_TOKENS
    if k < 1:
        return None
    offsets = encoding.offsets  # each read builds a list: read once
    start, previous = offsets[k][0], offsets[k - 1][0]
    if start <= previous or len(prompt) - start < margin or not prompt[start:].strip():
        return None  # inside a character's bytes, too close to the end for added tokens, or spaces only
    if any(encoding.special_tokens_mask[k:]):
        return None
    return k, start


def _checked(
    tokenizer: Any, prompts: list[str], prompt_ids: list[list[int]], cuts: list[Optional[tuple[int, int]]],
    encode: Any,
) -> list[Optional[tuple[int, int]]]:  # fmt: skip
    """The cuts whose prompt tail tokenizes alone as it does within the prompt."""
    at = [i for i, cut in enumerate(cuts) if cut]
    tails = encode(tokenizer, [prompts[i][cuts[i][1] :] for i in at], [False] * len(at))  # type: ignore[index]
    out = list(cuts)
    for i, tail in zip(at, tails):
        if tail != prompt_ids[i][cuts[i][0] :]:  # type: ignore[index]
            out[i] = None
    return out


def _tripwire(
    tokenizer: Any, special: list[bool], continuations: list[list[str]], cuts: list[Optional[tuple[int, int]]],
    out: list[list[list[int]]], encode: Any,
) -> None:  # fmt: skip
    sampled = [i for i, cut in enumerate(cuts) if cut and i % CHECK_EVERY == 0]
    texts = [text for i in sampled for text in continuations[i]]
    whole = iter(encode(tokenizer, texts, [special[i] for i in sampled for _ in continuations[i]]))
    for i in sampled:
        for ids in out[i]:
            if ids != next(whole):
                raise RuntimeError(
                    "lit_dpo: tokenizing a continuation from inside its prompt gave other ids than tokenizing it "
                    "whole; please report this with the tokenizer's name"
                )


def _regroup(flat: list[list[int]], groups: list[list[str]]) -> list[list[list[int]]]:
    out, at = [], 0
    for texts in groups:
        out.append(flat[at : at + len(texts)])
        at += len(texts)
    return out
