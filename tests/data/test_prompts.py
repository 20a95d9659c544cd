"""lit_dpo/data/prompts.py: prompt rows for generation, with every other column kept for the judge."""

import pytest

from lit_dpo.data.prompts import read_prompts
from lit_dpo.data.rows import RowFormat
from lit_dpo.errors import DataError


def test_prompts_keep_their_columns_and_row_numbers(tmp_path, write_jsonl):
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"question": "2+2?", "answer": 4}, {"question": [{"role": "user", "content": "hi"}]}]
    )
    got = read_prompts(path, fmt=RowFormat({"prompt": "question"}, {}))
    assert got == [("2+2?", {"answer": 4}, 1), ([{"role": "user", "content": "hi"}], {}, 2)]


@pytest.mark.parametrize(
    "row, problem",
    [({"answer": 1}, "row 1, field 'prompt': missing"), ({"prompt": " "}, "row 1, field 'prompt': holds no text"),
     (["not", "an", "object"], "row 1: expected an object with a prompt")],
)  # fmt: skip
def test_a_bad_prompt_row_names_file_row_and_field(tmp_path, write_jsonl, row, problem):
    path = write_jsonl(tmp_path / "p.jsonl", [row])
    with pytest.raises(DataError, match=f"p.jsonl, {problem}"):
        read_prompts(path)
