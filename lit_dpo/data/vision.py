"""The image inputs of a batch: each prompt's images through the model's image processor, in the order the
prompts appear in the batch's flattened rows. Vision-language models place image features at their image tokens in
that order, so the images follow the layout: once per example with prefix sharing (the vision encoder runs once
per pair), once per sequence in the padded layout (twice per pair, as in TRL's concatenated forward)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from lit_dpo.data.images import decoded
from lit_dpo.errors import InputError


@dataclass
class VisionInputs:
    """The image processor's tensors (``pixel_values``, ``pixel_attention_mask``, ``image_grid_thw``, ...), passed
    to the model's forward as they are."""

    tensors: dict[str, Tensor]

    def to(self, device: torch.device | str) -> "VisionInputs":
        return VisionInputs({name: value.to(device) for name, value in self.tensors.items()})

    @property
    def images(self) -> int:
        """Images (or image tiles) the vision encoder runs on."""
        if "image_grid_thw" in self.tensors:  # Qwen2-VL's family: every image's patches in one (patches, dim)
            return int(self.tensors["image_grid_thw"].shape[0])
        pixels = self.tensors["pixel_values"]
        return int(pixels.shape[0] * pixels.shape[1]) if pixels.dim() == 5 else int(pixels.shape[0])


def feature_token(processor: Any) -> tuple[str, int]:
    """The token each of an image's features takes the place of in the prompt, and its id. Gemma 3's processor
    names its start-of-image token as its image token (the placeholder a prompt holds); its features fill the
    tokenizer's image token."""
    from transformers import Gemma3Processor

    source = processor.tokenizer if isinstance(processor, Gemma3Processor) else processor
    return source.image_token, source.image_token_id


def vision_inputs(image_processor: Any, images: Sequence[tuple[bytes, ...]]) -> VisionInputs:
    """``images``: the encoded images of each prompt, in the order the prompts appear in the flattened rows."""
    if image_processor is None:
        raise InputError("examples with images need a vision-language model's image processor (its AutoProcessor)")
    pictures = [[decoded(data) for data in prompt_images] for prompt_images in images]
    return VisionInputs(dict(image_processor(images=pictures, return_tensors="pt")))
