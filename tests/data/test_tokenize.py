"""lit_dpo/data/tokenize.py: boundary-safe tokenization of pairs and unpaired rows, and the length limits."""

import copy

import pytest

from lit_dpo.data import Pair, UnpairedExample, fit_length, parse_row, tokenize_row
from lit_dpo.errors import DataError


def test_standard_row_shares_prompt_and_ends_with_eos(tokenizer):
    tok = tokenizer
    pair = tokenize_row(tok, parse_row({"prompt": "what is the cat", "chosen": " yes", "rejected": " no it is not"}))
    assert tok.decode(pair.prompt_ids) + tok.decode(pair.chosen_ids) == "what is the cat yes<|im_end|>"
    assert pair.chosen_ids[-1] == pair.rejected_ids[-1] == tok.eos_token_id
    # completions are read off the tokenization of prompt + completion: what the model sees at inference
    assert pair.prompt_ids + pair.chosen_ids == tok("what is the cat yes<|im_end|>")["input_ids"]
    assert pair.prompt_ids + pair.rejected_ids == tok("what is the cat no it is not<|im_end|>")["input_ids"]


def test_boundary_merge_cuts_where_tokens_diverge(tokenizer):
    tok = tokenizer
    # "ca" + "t" merges into "cat" across the boundary: the prompt keeps only the shared tokens
    pair = tokenize_row(tok, parse_row({"prompt": "the ca", "chosen": "t sat", "rejected": "r"}))
    assert pair.prompt_ids + pair.chosen_ids == tok("the cat sat<|im_end|>")["input_ids"]
    assert pair.prompt_ids + pair.rejected_ids == tok("the car<|im_end|>")["input_ids"]
    prompt = tok.decode(pair.prompt_ids)
    assert "the ca".startswith(prompt) and len(prompt) < len("the ca")


def test_conversational_row_applies_chat_template(tokenizer):
    tok = tokenizer
    row = {
        "prompt": [{"role": "user", "content": "what is it"}],
        "chosen": [{"role": "assistant", "content": "yes"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }
    pair = tokenize_row(tok, parse_row(row))
    assert tok.decode(pair.prompt_ids) == "<|im_start|>user\nwhat is it<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(pair.chosen_ids) == "yes<|im_end|>\n"
    assert tok.decode(pair.rejected_ids) == "no<|im_end|>\n"


def test_unpaired_row_takes_the_same_path(tokenizer):
    """An unpaired row's completion has the tokens the same completion gets in a pair: one tokenization rule."""
    example = tokenize_row(tokenizer, parse_row({"prompt": "the ca", "completion": "t sat", "label": "false"}))
    pair = tokenize_row(tokenizer, parse_row({"prompt": "the ca", "chosen": "t sat", "rejected": "t sat"}))
    assert example == UnpairedExample(pair.prompt_ids, pair.chosen_ids, desirable=False)


EX = Pair([1, 2, 3, 4], [5, 6], [7, 8, 9])


def test_fit_length_within_limits_is_untouched():
    assert fit_length(EX, 7, None, "error") == (EX, None)


def test_fit_length_names_the_longer_field():
    assert fit_length(EX, 6, None, "error") == (EX, ("rejected", "prompt + rejected is 7 tokens > max_length 6"))
    assert fit_length(EX, 10, 3, "error")[1] == ("prompt", "4 tokens > max_prompt_length 3")
    unpaired = UnpairedExample([1, 2, 3, 4], [5, 6, 7], desirable=True)
    assert fit_length(unpaired, 6, None, "error")[1] == ("completion", "prompt + completion is 7 tokens > max_length 6")


def test_fit_length_keep_start_and_drop():
    out, problem = fit_length(EX, 6, 3, "keep_start")
    assert out == Pair([2, 3, 4], [5, 6], [7, 8, 9])
    out, _ = fit_length(EX, 5, None, "keep_start")
    assert out == Pair([1, 2, 3, 4], [5], [7])
    # the prompt alone fills max_length: its end is kept, half of max_length, and the completions get the rest
    assert fit_length(EX, 4, None, "keep_start")[0] == Pair([3, 4], [5, 6], [7, 8])
    assert fit_length(EX, 6, None, "drop") == (None, ("rejected", "prompt + rejected is 7 tokens > max_length 6"))


def _with_template(tokenizer, old, new):
    """A copy of the tokenizer whose chat template has ``old`` replaced by ``new``."""
    changed = copy.deepcopy(tokenizer)
    assert old in changed.chat_template
    changed.chat_template = changed.chat_template.replace(old, new)
    return changed


CHAT = {
    "prompt": [{"role": "user", "content": "what is it"}],
    "chosen": [{"role": "assistant", "content": "yes"}],
    "rejected": [{"role": "assistant", "content": "no"}],
}


def test_tools_reach_the_chat_template(tokenizer):
    tool = {"type": "function", "function": {"name": "add", "description": "adds", "parameters": {}}}
    loop = "{% for m in messages %}"
    with_tools = _with_template(
        tokenizer, loop, "{% for t in tools or [] %}{{ t['function']['name'] }} {% endfor %}" + loop
    )
    pair = tokenize_row(with_tools, parse_row(CHAT | {"tools": [tool]}))
    assert with_tools.decode(pair.prompt_ids).startswith("add <|im_start|>user")
    assert with_tools.decode(pair.chosen_ids) == "yes<|im_end|>\n"


def test_a_template_that_rewrites_earlier_turns_is_named_at_the_first_row(tokenizer):
    """A thinking-style template: the generation prompt opens a <think> block that the rendered turn does not
    have, so the prompt alone is not where prompt + completion starts."""
    generation = "<|im_start|>assistant\n{% endif %}"
    thinking = _with_template(tokenizer, generation, "<|im_start|>assistant\n<think>{% endif %}")
    with pytest.raises(
        DataError, match=r"chat.jsonl, row 7, field 'chosen': the chat template renders the prompt alone"
    ):
        tokenize_row(thinking, parse_row(CHAT, source="chat.jsonl", row=7))
