"""Conversational fields: message lists checked and normalised for the chat template, and implicit prompts.

A message is ``{"role": ..., "content": ...}``. Content is a string, or a list of parts as chat APIs write them
(``[{"type": "text", "text": ...}]``): text parts are joined with newlines (as vLLM does for text-only models).
Image parts (``{"type": "image"}``) stay in place, as parts, in the prompts of rows that carry images (``images``,
``lit_dpo.data.images``); other parts (audio, ...) are refused by name. Roles outside the usual set are refused unless the user maps
them (``--data.roles='{human: user, gpt: assistant}'``), never passed on into the text.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from lit_dpo.errors import DataError

USUAL_ROLES = ("system", "developer", "user", "assistant", "tool", "function", "ipython")


def normalized_messages(
    value: list, source: str, row: int, field: str, roles: Optional[Mapping[str, str]] = None, images: bool = False
) -> list[dict[str, Any]]:
    """``value`` (a non-empty list) as messages with a usual role and string content, or a ``DataError``; with
    ``images``, a content holding image parts stays a list of parts: ``{"type": "image"}`` and text parts."""
    out = []
    for number, message in enumerate(value, start=1):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)):
            raise DataError.at(source, row, field, f"each message needs a string 'role', got {message!r:.80}")
        role = (roles or {}).get(message["role"], message["role"])
        if role not in USUAL_ROLES:
            raise DataError.at(
                source, row, field,
                f"message {number} has role {role!r}, not one of {', '.join(USUAL_ROLES)}; "
                f"to rename it, pass --data.roles='{{{role}: assistant}}' (or user, ...)",
            )  # fmt: skip
        content = _content(message, source, row, field, number, images)
        out.append({**message, "role": role, "content": content})
    return out


def _content(message: dict, source: str, row: int, field: str, number: int, images: bool) -> str | list:
    content = message.get("content")
    if content is None and message.get("tool_calls"):
        return ""  # an assistant turn that only calls tools
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise DataError.at(source, row, field, f"each message needs a string 'content', got {message!r:.80}")
    texts, parts = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind == "image" and images:
            parts.append({"type": "image"})
            continue
        if kind == "image":
            raise DataError.at(source, row, field, f"message {number} has an image part, but the row has no images "
                               "(an 'images' or 'image' column) or it is a completion (images go in the prompt)")  # fmt: skip
        if kind != "text" or not isinstance(part.get("text"), str):
            raise DataError.at(
                source, row, field, f"message {number} has a content part of type {kind!r}; lit_dpo trains on text"
            )
        texts.append(part["text"])
        parts.append({"type": "text", "text": part["text"]})
    return parts if len(parts) > len(texts) else "\n".join(texts)


def image_parts(messages: list[dict[str, Any]]) -> int:
    """The number of ``{"type": "image"}`` parts in messages."""
    return sum(
        sum(part.get("type") == "image" for part in m["content"]) for m in messages if isinstance(m["content"], list)
    )


def text_of(content: str | list) -> str:
    """A message content's text: itself, or its text parts joined."""
    return content if isinstance(content, str) else "\n".join(p["text"] for p in content if p["type"] == "text")


def split_shared_messages(chosen: list, rejected: list) -> tuple[list, list, list]:
    """``(prompt, chosen, rejected)``: the leading messages both share, and the rest (at least one message each)."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def split_shared_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    """``(prompt, chosen, rejected)`` as TRL's ``extract_prompt`` splits strings: the longest common prefix is the
    prompt, except that a space ending it goes to the completions (hh-rlhf: "...Assistant:" | " answer"). Like
    TRL's loop, a string that is a prefix of the other leaves its last character to the completions."""
    shortest = min(len(chosen), len(rejected))
    idx = _common_prefix_length(chosen, rejected, shortest)
    if idx == shortest:
        idx = max(shortest - 1, 0)
    elif chosen[idx - 1] == " ":
        idx -= 1
    return chosen[:idx], chosen[idx:], rejected[idx:]


def _common_prefix_length(a: str, b: str, shortest: int) -> int:
    """By bisection over slices compared in C: a character-by-character loop costs more than tokenizing the row."""
    low, high = 0, shortest  # a[:low] == b[:low]; the prefix ends at or before high
    while low < high:
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def is_blank(value: Any) -> bool:
    """Whether a completion holds no text: an empty or whitespace-only string, or messages whose contents are."""
    if isinstance(value, str):
        return not value.strip()
    return all(not text_of(message.get("content") or "").strip() and not message.get("tool_calls") for message in value)
