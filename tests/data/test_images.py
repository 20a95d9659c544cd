"""lit_dpo/data/images.py and image rows: TRL's vision format read, every image checked, one line per problem."""

import io
import json

import datasets
import pytest
from PIL import Image

from lit_dpo.data import parse_row, read_prompts, read_rows
from lit_dpo.data.rows import RowFormat
from lit_dpo.data.tokenize import tokenize_image_prompt, tokenize_rows
from lit_dpo.errors import DataError


def _png(color=(200, 30, 30), size=(6, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _prompt(images=1):
    return [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": "what is it?"}]}]


def _row(**fields):
    chosen = [{"role": "assistant", "content": "a red square"}]
    rejected = [{"role": "assistant", "content": "a cat"}]
    return {"prompt": _prompt(), "chosen": chosen, "rejected": rejected} | fields


def test_images_as_paths_relative_to_the_data_file_bytes_pil_and_undecoded_features(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(_png())
    source = tmp_path / "rows.jsonl"
    source.write_text("")  # the data file the paths are relative to
    pil = Image.new("RGB", (3, 3), (0, 90, 0))
    row = parse_row(_row(prompt=_prompt(4), images=["pics/a.png", _png((0, 0, 255)), pil, {"bytes": _png(), "path": None}]),
                    str(source), 1)  # fmt: skip
    assert len(row.images) == 4 and row.images[0] == _png() and row.images[3] == _png()
    assert Image.open(io.BytesIO(row.images[2])).getpixel((1, 1)) == (0, 90, 0)  # PIL images kept losslessly
    assert row.prompt[0]["content"][:4] == [{"type": "image"}] * 4  # the parts stay where the images go
    single = parse_row(_row(image=_png()), str(source), 2)
    assert single.images == (_png(),)
    text_only = parse_row({"prompt": "hi", "chosen": "a", "rejected": "b"}, str(source), 3)
    assert text_only.images == ()


def test_images_go_before_the_first_user_messages_text_when_no_part_names_them(tmp_path):
    """TRL's convention (``prepare_multimodal_messages``): plain-text messages and an images column."""
    prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is it?"},
              {"role": "assistant", "content": "a square"}, {"role": "user", "content": "and its color?"}]  # fmt: skip
    row = parse_row(_row(prompt=prompt, images=[_png(), _png()]), str(tmp_path / "rows.jsonl"), 1)
    assert row.prompt[1]["content"] == [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "what is it?"}]
    assert row.prompt[0] == prompt[0] and row.prompt[2:] == prompt[2:]
    (read,) = read_prompts(_jsonl(tmp_path, [{"prompt": prompt, "images": [_png_file(tmp_path)]}]))
    assert read.prompt[1]["content"][0] == {"type": "image"}


def test_an_image_row_without_a_prompt_is_one_line_naming_the_column_to_map(tmp_path):
    """RLAIF-V's raw rows (question, chosen, rejected, image): a prompt split off the answers would hold no image."""
    record = {"question": "what is it?", "chosen": "a cat", "rejected": "a dog", "image": _png()}
    with pytest.raises(DataError, match=r"row 3, field 'prompt': missing; rows with images need one .*"
                                        r"pass --data.columns='\{prompt: question\}'"):  # fmt: skip
        parse_row(record, "rlaif.jsonl", 3)
    assert parse_row(record, "rlaif.jsonl", 3, RowFormat({"prompt": "question"}, {})).prompt == "what is it?"


def _jsonl(folder, rows):
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _png_file(folder):
    (folder / "a.png").write_bytes(_png())
    return "a.png"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"images": ["nope.png"]}, r"row 7, field 'images\[0\]': cannot read image file .*nope\.png"),
        ({"images": [b"not an image"]}, r"row 7, field 'images\[0\]': not a readable image"),
        ({"images": [_png(), 3]}, r"row 7, field 'images\[1\]': expected an image path, bytes or a PIL image, got int"),
        ({"images": _png()}, r"row 7, field 'images': expected a list of images, got bytes"),
        ({"images": [_png(), _png()]}, r"row 7, field 'prompt': has 1 image parts for 2 images"),
        ({"images": []}, r"row 7, field 'prompt': message 1 has an image part, but the row has no images"),
        ({"image": _png(), "chosen": [{"role": "assistant", "content": [{"type": "image"}]}]},
         r"row 7, field 'chosen': message 1 has an image part, but .* a completion \(images go in the prompt\)"),
    ],
)  # fmt: skip
def test_a_bad_image_row_is_one_line_naming_file_row_and_field(tmp_path, fields, message):
    with pytest.raises(DataError, match=rf"^{tmp_path}/rows.jsonl, {message}"):
        parse_row(_row(**fields), str(tmp_path / "rows.jsonl"), 7)


def test_a_hub_style_data_set_with_an_image_feature_reads_as_rows(tmp_path):
    rows = [_row(images=[Image.new("RGB", (4, 4), (i * 40, 0, 0))]) for i in range(3)]
    features = datasets.Features({
        "prompt": [{"role": datasets.Value("string"), "content": [{"type": datasets.Value("string"),
                                                                     "text": datasets.Value("string")}]}],
        "chosen": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "rejected": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        "images": datasets.Sequence(datasets.Image()),
    })  # fmt: skip
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    read = read_rows(str(tmp_path / "saved"))
    assert [len(row.images) for row in read.rows] == [1, 1, 1]
    assert Image.open(io.BytesIO(read.rows[2].images[0])).getpixel((0, 0)) == (80, 0, 0)


def test_a_text_model_refuses_image_rows_with_one_line(tokenizer, tmp_path):
    row = parse_row(_row(images=[_png()]), str(tmp_path / "rows.jsonl"), 5)
    with pytest.raises(DataError, match=r"row 5, field 'images': rows with images need a vision-language model"):
        tokenize_rows(tokenizer, [row])
    with pytest.raises(DataError, match=r"row 5, field 'images': rows with images need a vision-language model"):
        tokenize_image_prompt(None, row.prompt, row.images, str(tmp_path / "prompts.jsonl"), 5)  # online prompts


def test_image_rows_tokenize_through_the_processor_each_image_expanded_in_the_prompt(tiny_vlm, tmp_path):
    _, processor = tiny_vlm
    tokenizer = processor.tokenizer
    conversational = parse_row(_row(prompt=_prompt(2), images=[_png(), _png((0, 0, 255), (40, 48))]), "f.jsonl", 1)
    standard = parse_row({"prompt": "<image>what is it?", "chosen": " red", "rejected": " blue", "image": _png()},
                         "f.jsonl", 2)  # fmt: skip
    pair, plain = tokenize_rows(tokenizer, [conversational, standard], processor=processor)
    decoded = lambda row: [Image.open(io.BytesIO(data)).convert("RGB") for data in row.images]  # noqa: E731
    text = processor.apply_chat_template(conversational.prompt, add_generation_prompt=True, tokenize=False)
    assert text.count("<image>") == 2
    expected = processor(text=[text], images=[decoded(conversational)], add_special_tokens=False)["input_ids"][0]
    assert pair.prompt_ids == list(expected) and pair.images == conversational.images
    tiles = processor.image_processor(images=[decoded(conversational)], return_tensors="pt")["pixel_values"].shape[1]
    assert pair.prompt_ids.count(processor.image_token_id) == 4 * tiles > 4 * 2  # 4 tokens a tile, tiles and globals
    assert tokenizer.decode(pair.chosen_ids) == "a red square<|im_end|>\n"  # completions as for text rows
    assert plain.prompt_ids == list(processor(text=["<image>what is it?"], images=[decoded(standard)])["input_ids"][0])
    assert tokenizer.decode(plain.chosen_ids) == " red<|im_end|>"


def test_a_string_prompt_holds_one_image_token_per_image_or_none(tiny_vlm):
    """None (RLAIF-V's question column, say): the images' tokens go before the text, as for messages."""
    _, processor = tiny_vlm
    row = lambda prompt, images: parse_row({"prompt": prompt, "chosen": " red", "rejected": " blue",  # noqa: E731
                                            "images": images}, "f.jsonl", 4)  # fmt: skip
    (placed,) = tokenize_rows(processor.tokenizer, [row("what is it?", [_png(), _png()])], processor=processor)
    (written,) = tokenize_rows(processor.tokenizer, [row("<image><image>what is it?", [_png(), _png()])],
                               processor=processor)  # fmt: skip
    assert placed.prompt_ids == written.prompt_ids and placed.chosen_ids == written.chosen_ids
    with pytest.raises(
        DataError, match=r"^f\.jsonl, row 4, field 'prompt': holds 1 image tokens \(<image>\) for 2 images"
    ):
        tokenize_rows(processor.tokenizer, [row("<image>what is it?", [_png(), _png()])], processor=processor)
