"""Image tokens that attend to each other both ways (Gemma 3): each image's tokens form a block in which every
token sees every other, while the rest of the sequence stays causal. The model builds that mask itself from
``token_type_ids`` for padded rows; a prefix-shared batch brings its own block mask, to which lit_dpo adds each
image's block. The image tokens are all in the prompt, which chosen and rejected share, so both layouts give the
same scores."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_dpo.data.collate import Batch

# the model types whose image tokens attend both ways within an image
BIDIRECTIONAL_IMAGES = frozenset({"gemma3"})


def has_image_blocks(config: Any) -> bool:
    return config.model_type in BIDIRECTIONAL_IMAGES


def image_block_inputs(config: Any, batch: Batch) -> dict[str, Tensor]:
    """What such a model needs beside ``batch``'s tensors when it holds images: the token types of a padded batch
    (the model builds the mask), a prefix-shared batch's ``(rows, 1, T, T)`` mask with the image blocks added."""
    if batch.vision is None:
        return {}
    images = batch.input_ids == config.image_token_id  # (rows, T)
    if batch.position_ids is None:
        return {"token_type_ids": images.long()}
    return {"attention_mask": batch.attention_mask | same_image(images)[:, None]}


def same_image(images: Tensor) -> Tensor:
    """``(rows, T, T)``: query and key are image tokens of one image (one run of image tokens)."""
    starts = images & ~torch.nn.functional.pad(images, (1, 0))[:, :-1]
    block = torch.where(images, starts.cumsum(1), 0)  # 1, 2, ... for each run of image tokens; 0 elsewhere
    return (block[:, :, None] == block[:, None, :]) & images[:, :, None]
