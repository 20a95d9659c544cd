"""lit_dpo/data/messages.py: conversations checked and normalized; prompts split off as TRL splits them."""

import pytest

from lit_dpo.data.messages import is_blank, normalized_messages, split_shared_messages, split_shared_text
from lit_dpo.errors import DataError

USER, ASSISTANT = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}


def test_roles_are_renamed_and_content_parts_joined():
    messages = [{"role": "human", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert normalized_messages(messages, "f.jsonl", 3, "prompt", roles={"human": "user"}) == [
        {"role": "user", "content": "a\nb"}
    ]


@pytest.mark.parametrize(
    "message, problem",
    [
        ({"content": "x"}, "each message needs a string 'role'"),
        ({"role": "narrator", "content": "x"}, "message 1 has role 'narrator', not one of"),
        ({"role": "user", "content": [{"type": "image"}]}, "message 1 has an image part, but the row has no images"),
        ({"role": "user", "content": 3}, "each message needs a string 'content'"),
    ],
)
def test_a_bad_message_names_file_row_and_field(message, problem):
    with pytest.raises(DataError, match=rf"^f.jsonl, row 3, field 'chosen': {problem}"):
        normalized_messages([message], "f.jsonl", 3, "chosen")


def test_a_tool_call_turn_may_have_no_content():
    call = {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f"}}]}
    assert normalized_messages([call], "f", 1, "chosen")[0]["content"] == ""


def test_shared_leading_messages_are_the_prompt():
    other = {"role": "assistant", "content": "bye"}
    assert split_shared_messages([USER, ASSISTANT], [USER, other]) == ([USER], [ASSISTANT], [other])
    # each completion keeps at least one message, even when one conversation is a prefix of the other
    assert split_shared_messages([USER, ASSISTANT], [USER, ASSISTANT, other]) == (
        [USER],
        [ASSISTANT],
        [ASSISTANT, other],
    )


def test_shared_text_splits_before_the_space_as_trl():
    assert split_shared_text("Human: hi Assistant: yes", "Human: hi Assistant: no") == (
        "Human: hi Assistant:",
        " yes",
        " no",
    )


def test_blank_completions():
    assert is_blank("  \n") and not is_blank(" a")
    assert is_blank([{"role": "assistant", "content": " "}]) and not is_blank([ASSISTANT])
