"""lit_dpo/data/rows.py: rows parsed and checked, every bad row named by file, row and field."""

import json

import pytest

from lit_dpo.data import read_rows
from lit_dpo.errors import DataError


def test_conversational_and_implicit_prompt(tmp_path, chat_rows, write_jsonl):
    rows = chat_rows(2)
    implicit = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in rows]
    got = read_rows(write_jsonl(tmp_path / "d.jsonl", implicit)).rows
    assert [(g.prompt, g.chosen, g.rejected) for g in got] == [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]


GOOD = {"prompt": "p", "chosen": "c", "rejected": "r"}
MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"prompt": "p", "chosen": ', r"row 2: invalid JSON"),
        (json.dumps({"prompt": "p", "chosen": "c"}), r"row 2, field 'rejected': missing"),
        (json.dumps(GOOD | {"chosen": None}), r"row 2, field 'chosen': is null"),
        (
            json.dumps(GOOD | {"rejected": 3}),
            r"row 2, field 'rejected': expected a string or a list of messages, got int",
        ),
        (
            json.dumps(GOOD | {"prompt": [{"role": "user"}]}),
            r"row 2, field 'prompt': each message needs a string 'content'",
        ),
        (json.dumps(GOOD | {"prompt": MSG}), r"row 2: mixes strings and message lists"),
        (json.dumps([1, 2]), r"row 2: expected an object"),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path, line, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    with pytest.raises(DataError, match=f"^{path}, {expected}"):
        read_rows(str(path))


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,chosen\n"p","c"\n')
    with pytest.raises(DataError, match=r"d.csv, row 2, field 'rejected': missing"):
        read_rows(str(path))


# --- real data sets as users download them ---------------------------------------------------------------------

HH = [  # Anthropic hh-rlhf: the prompt is implicit in both strings
    {
        "chosen": "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.",
        "rejected": "\n\nHuman: What is the capital of France?\n\nAssistant: I don't know, maybe Lyon.",
    },
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."},
    {"chosen": "Say yes: yes", "rejected": "Say yes: yes please"},  # one string is a prefix of the other
]


def test_implicit_prompt_in_strings_splits_as_trl(tmp_path, write_jsonl):
    from trl.data_utils import extract_prompt

    got = read_rows(write_jsonl(tmp_path / "hh.jsonl", HH)).rows
    assert got[0].prompt == "\n\nHuman: What is the capital of France?\n\nAssistant:"
    assert got[0].chosen == " Paris." and got[0].rejected == " I don't know, maybe Lyon."  # the space goes with them
    for row, record in zip(got, HH):
        assert (row.prompt, row.chosen, row.rejected) == tuple(extract_prompt(record).values())


def test_implicit_prompt_needs_shared_text(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "hh.jsonl", HH[:1] + [{"chosen": "Yes.", "rejected": "No."}])
    with pytest.raises(
        DataError, match=r"hh.jsonl, row 2, field 'prompt': missing, and chosen/rejected share no leading text"
    ):
        read_rows(path)


SYSTEM = {"role": "system", "content": "Be brief."}


def test_multi_turn_conversations_keep_their_system_message_and_history(tmp_path, write_jsonl):
    turns = [SYSTEM, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    turns += [{"role": "user", "content": "2 + 2?"}]
    record = {
        "chosen": turns + [{"role": "assistant", "content": "4"}],
        "rejected": turns + [{"role": "assistant", "content": "5"}],
    }
    (row,) = read_rows(write_jsonl(tmp_path / "chat.jsonl", [record])).rows
    assert row.prompt == turns and row.chosen == [{"role": "assistant", "content": "4"}]


def test_content_parts_are_joined_and_other_parts_refused(tmp_path, write_jsonl):
    parts = [{"type": "text", "text": "first line"}, {"type": "text", "text": "second line"}]
    record = {"prompt": [{"role": "user", "content": parts}], "chosen": [{"role": "assistant", "content": "a"}]}
    record["rejected"] = [{"role": "assistant", "content": [{"type": "text", "text": "b"}]}]
    (row,) = read_rows(write_jsonl(tmp_path / "parts.jsonl", [record])).rows
    assert row.prompt == [{"role": "user", "content": "first line\nsecond line"}] and row.rejected[0]["content"] == "b"
    image = {"type": "image_url", "image_url": {"url": "http://x/cat.png"}}
    record["prompt"] = [{"role": "user", "content": [image, parts[0]]}]
    with pytest.raises(DataError, match=r"row 1, field 'prompt': message 1 has a content part of type 'image_url'"):
        read_rows(write_jsonl(tmp_path / "image.jsonl", [record]))


def test_unusual_roles_are_refused_or_mapped(tmp_path, write_jsonl):
    from lit_dpo.data.rows import RowFormat

    record = {
        "prompt": [{"role": "human", "content": "hi"}],
        "chosen": [{"role": "gpt", "content": "hello"}],
        "rejected": [{"role": "gpt", "content": "go away"}],
    }
    path = write_jsonl(tmp_path / "sharegpt.jsonl", [record])
    with pytest.raises(
        DataError, match=r"sharegpt.jsonl, row 1, field 'prompt': message 1 has role 'human', not one of"
    ):
        read_rows(path)
    (row,) = read_rows(path, fmt=RowFormat(roles={"human": "user", "gpt": "assistant"})).rows
    assert row.prompt[0]["role"] == "user" and row.chosen[0]["role"] == "assistant"


def test_tools_column_as_list_or_json_string(tmp_path, chat_rows, write_jsonl):
    tool = {"type": "function", "function": {"name": "add", "description": "add two numbers", "parameters": {}}}
    rows = chat_rows(2)
    rows[0]["tools"], rows[1]["tools"] = [tool], json.dumps([tool])
    assert [r.tools for r in read_rows(write_jsonl(tmp_path / "tools.jsonl", rows)).rows] == [[tool], [tool]]
    bad = [{"prompt": "p", "chosen": "a", "rejected": "b", "tools": [tool]}]
    with pytest.raises(DataError, match=r"row 1, field 'tools': needs conversational rows"):
        read_rows(write_jsonl(tmp_path / "bad.jsonl", bad))


def test_columns_are_mapped(tmp_path, write_jsonl):
    from lit_dpo.data.rows import RowFormat

    records = [{"question": "what is it", "response_j": " yes", "response_k": " no"}]
    fmt = RowFormat(columns={"prompt": "question", "chosen": "response_j", "rejected": "response_k"})
    (row,) = read_rows(write_jsonl(tmp_path / "se.jsonl", records), fmt=fmt).rows
    assert (row.prompt, row.chosen, row.rejected) == ("what is it", " yes", " no")
    with pytest.raises(DataError, match=r"row 1, field 'prompt': missing \(mapped to column 'title'"):
        read_rows(write_jsonl(tmp_path / "se.jsonl", records), fmt=RowFormat(columns={"prompt": "title"}))


def test_empty_and_identical_completions_are_dropped_and_counted(tmp_path, write_jsonl):
    records = [GOOD, GOOD | {"chosen": "  "}, GOOD | {"rejected": "c"}, GOOD]
    got = read_rows(write_jsonl(tmp_path / "d.jsonl", records))
    assert [r.row for r in got.rows] == [1, 4]
    assert got.dropped == {"empty completion": [2], "identical completions": [3]}
    blank = {"prompt": MSG, "chosen": [{"role": "assistant", "content": " \n"}], "rejected": MSG}
    assert read_rows(write_jsonl(tmp_path / "e.jsonl", [blank])).dropped == {"empty completion": [1]}


# --- bytes and files as they come ------------------------------------------------------------------------------


def test_invalid_utf8_names_row_and_field(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"prompt": "p", "chosen": "caf\xe9", "rejected": "r"}\n')
    with pytest.raises(DataError, match=r"bytes.jsonl, row 2, field 'chosen': holds bytes that are not valid UTF-8"):
        read_rows(str(path))
    csv_path = tmp_path / "bytes.csv"
    csv_path.write_bytes(b"prompt,chosen,rejected\np,c,r\np,c,caf\xe9\n")
    with pytest.raises(DataError, match=r"bytes.csv, row 3, field 'rejected': holds bytes that are not valid UTF-8"):
        read_rows(str(csv_path))
