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
    assert got == [("2+2?", {"answer": 4}, 1, ()), ([{"role": "user", "content": "hi"}], {}, 2, ())]


def test_a_prompt_row_carries_its_images_out_of_the_judge_columns(tmp_path, write_jsonl):
    from PIL import Image

    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "a.png")
    picture = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]}]
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": picture, "images": ["a.png"], "answer": "red"},
                                              {"prompt": picture, "image": "b.png"}])  # fmt: skip
    with pytest.raises(DataError, match=r"p.jsonl, row 2, field 'image': cannot read image file"):
        read_prompts(path)
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": picture, "images": ["a.png"], "answer": "red"}])
    (row,) = read_prompts(path)
    assert row.columns == {"answer": "red"} and row.images == ((tmp_path / "a.png").read_bytes(),)
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": picture}])
    with pytest.raises(DataError, match=r"row 1, field 'prompt': message 1 has an image part, but the row has no"):
        read_prompts(path)


@pytest.mark.parametrize(
    "row, problem",
    [({"answer": 1}, "row 1, field 'prompt': missing"), ({"prompt": " "}, "row 1, field 'prompt': holds no text"),
     (["not", "an", "object"], "row 1: expected an object with a prompt")],
)  # fmt: skip
def test_a_bad_prompt_row_names_file_row_and_field(tmp_path, write_jsonl, row, problem):
    path = write_jsonl(tmp_path / "p.jsonl", [row])
    with pytest.raises(DataError, match=f"p.jsonl, {problem}"):
        read_prompts(path)
