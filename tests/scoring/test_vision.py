"""Vision-language pairs scored in one forward: prefix sharing gives the padded layout's log-probs while the vision
encoder sees each pair's images once instead of twice (``lit_dpo.data.vision``)."""

import io

import pytest
import torch
from PIL import Image

from lit_dpo.data import PaddedCollator, Pair, SharedPrefixCollator
from lit_dpo.errors import InputError
from lit_dpo.models import vision_tower
from lit_dpo.scoring.forward import score_sequences


def _png(seed: int, size: tuple[int, int]) -> bytes:
    """4 x 4 blocks of random colours: pooled image features (Gemma 3's 4 tokens an image) differ, as pixel noise's
    averages would not."""
    pixels = torch.randint(0, 255, (4, 4, 3), generator=torch.Generator().manual_seed(seed))
    buffer = io.BytesIO()
    Image.fromarray(pixels.to(torch.uint8).numpy()).resize(size, Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def pairs(any_tiny_vlm):
    """Three pairs: one image, two images of other sizes (more tiles or patches), one image again."""
    _, processor = any_tiny_vlm
    tokenizer = processor.tokenizer
    prompts = [(1, "what is it?", [_png(0, (40, 48))]), (2, "which is red?", [_png(1, (30, 20)), _png(2, (64, 32))]),
               (1, "is it big?", [_png(3, (20, 20))])]  # fmt: skip
    out = []
    for i, (count, question, images) in enumerate(prompts):
        parts = [{"type": "image"}] * count + [{"type": "text", "text": question}]  # the family's image markers
        text = processor.apply_chat_template([{"role": "user", "content": parts}], tokenize=False)
        decoded = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
        prompt_ids = processor(text=[text], images=[decoded])["input_ids"][0]
        answer = lambda words: tokenizer(words, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]  # noqa: E731
        out.append(Pair(list(prompt_ids), answer(" yes it is red"), answer(" no" * (i + 1)), images=tuple(images)))
    return out


def _scored(model, batch):
    tiles = []  # Idefics3: the image tiles; Qwen2-VL: the image patches
    hook = vision_tower(model).register_forward_hook(
        lambda m, args, kwargs, out: tiles.append((args[0] if args else kwargs["pixel_values"]).shape[0]),
        with_kwargs=True,
    )
    try:
        with torch.no_grad():
            return score_sequences(model, batch).logps, sum(tiles)
    finally:
        hook.remove()


def _tiles(image_processor):
    """The tiles a pair's images make (Idefics3 splits an image into 32-pixel tiles and adds a global one; Qwen2-VL
    cuts them into patches)."""
    decoded = lambda pair: [Image.open(io.BytesIO(data)).convert("RGB") for data in pair.images]  # noqa: E731
    pixels = lambda pair: image_processor(images=[decoded(pair)], return_tensors="pt")["pixel_values"]  # noqa: E731
    return lambda pair: pixels(pair).shape[1] if pixels(pair).dim() == 5 else pixels(pair).shape[0]


def test_prefix_sharing_scores_as_padded_rows_with_the_vision_encoder_once_per_pair(any_tiny_vlm, pairs):
    """Qwen2-VL: the model places the padded rows' positions itself, lit_dpo the shared rows' (multimodal rope)."""
    model, processor = any_tiny_vlm
    pad, images = processor.tokenizer.pad_token_id, processor.image_processor
    padded, padded_tiles = _scored(model, PaddedCollator(pad, image_processor=images)(pairs))
    total = sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    # one pair a row; all three in one row; two rows, the longest pair (two images) alone in the first, so that
    # the images' order (by rows) is not the pairs' order
    for pack_length in (0, 4 * total, -(-total // 2)):
        shared, shared_tiles = _scored(model, SharedPrefixCollator(pad, image_processor=images,
                                                                   pack_length=pack_length)(pairs))  # fmt: skip
        torch.testing.assert_close(shared, padded, rtol=1e-5, atol=1e-5)
        assert shared_tiles * 2 == padded_tiles == 2 * sum(map(_tiles(images), pairs))  # each pair's tiles once
    text_only = [Pair(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs]
    assert PaddedCollator(pad)(text_only).vision is None


def test_images_without_an_image_processor_are_one_line(tiny_vlm, pairs):
    with pytest.raises(InputError, match="examples with images need a vision-language model's image processor"):
        SharedPrefixCollator(0)(pairs)


def test_image_tokens_without_their_images_are_one_line(tiny_vlm, pairs):
    """A data module that drops the images would have Idefics3 read its image tokens as text: refused."""
    model, processor = tiny_vlm
    text_only = [Pair(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs]
    batch = SharedPrefixCollator(processor.tokenizer.pad_token_id)(text_only)
    with pytest.raises(InputError, match="a batch holds image tokens but no images"):
        score_sequences(model, batch)
