"""lit_dpo/data/continuation.py: a prompt's continuations tokenized from inside it give the ids of tokenizing them
whole, on texts built to break that (spaces, digits, accents, emoji, special tokens at the junction)."""

import random

import pytest

from lit_dpo.data import parse_row
from lit_dpo.data.continuation import encode_continuations, splits_locally
from lit_dpo.data.tokenize import encode, tokenize_rows

PIECES = ["the", " cat", "  ", " ", "\n", "\n\n", "12", "345", "é", "日本", "🙂", "!", "?", "'s", "<|im_end|>", "<|im_",
          "end|>", "ca", "t", "\t", "Human:", " Assistant:", "0"]  # fmt: skip


def _text(rng, low, high):
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(low, high)))


def _whole(tokenizer, prompt, special, texts):
    """The oracle: every text tokenized whole, one call each."""
    return tokenizer(prompt, add_special_tokens=special)["input_ids"], [
        tokenizer(text, add_special_tokens=special)["input_ids"] for text in texts
    ]


def _check(tokenizer, seed, n=300):
    rng = random.Random(seed)
    prompts = [_text(rng, 0, 40) for _ in range(n)]
    special = [rng.random() < 0.5 for _ in range(n)]
    continuations = [[p + _text(rng, 0, 6), p + _text(rng, 1, 6)] for p in prompts]
    prompt_ids, ids = encode_continuations(tokenizer, prompts, special, continuations, encode)
    for i in range(n):
        assert (prompt_ids[i], ids[i]) == _whole(tokenizer, prompts[i], special[i], continuations[i]), repr(prompts[i])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_continuations_match_whole_tokenization(tokenizer, seed):
    assert splits_locally(tokenizer)
    _check(tokenizer, seed)


def test_a_tokenizer_that_may_not_split_locally_is_tokenized_whole(tokenizer):
    from tokenizers import normalizers

    other = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer.__class__.from_str(
        tokenizer.backend_tokenizer.to_str()), eos_token="<|im_end|>")  # fmt: skip
    other.backend_tokenizer.normalizer = normalizers.Lowercase()
    assert not splits_locally(other)
    _check(other, 3, n=50)


def test_rows_tokenize_as_before(tokenizer, standard_rows, chat_rows):
    """tokenize_rows against the per-row path it replaced: prompt, prompt + chosen, prompt + rejected, whole."""
    for row in [parse_row(r) for r in standard_rows(30) + chat_rows(30)]:
        (pair,) = tokenize_rows(tokenizer, [row])
        chat = isinstance(row.prompt, list)
        render = lambda messages, more: tokenizer.apply_chat_template(  # noqa: E731
            messages, tokenize=False, add_generation_prompt=more)  # fmt: skip
        prompt = render(row.prompt, True) if chat else row.prompt
        fulls = [
            render(row.prompt + c, False) if chat else row.prompt + c + "<|im_end|>" for c in (row.chosen, row.rejected)
        ]
        prompt_ids, full_ids = _whole(tokenizer, prompt, not chat, fulls)
        assert pair.prompt_ids + pair.chosen_ids == full_ids[0] and pair.prompt_ids + pair.rejected_ids == full_ids[1]
        assert prompt_ids[: len(pair.prompt_ids)] == pair.prompt_ids


@pytest.mark.integration
def test_smollm2s_tokenizer_continues_exactly():
    from lit_dpo.hf import BUNDLED, load_tokenizer

    tokenizer = load_tokenizer(BUNDLED)
    assert splits_locally(tokenizer)
    _check(tokenizer, 4, n=500)
