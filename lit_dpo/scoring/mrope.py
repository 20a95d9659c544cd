"""Multimodal rope (Qwen2-VL's family): each token has three positions (time, height, width). Text tokens have the
same three; an image's tokens take their place on the image's grid of merged patches, all starting where the image
starts, and the text after an image goes on from one past the image's largest position.

These models place the positions themselves from a whole padded row (``get_rope_index``), with the tokens' types
(``mm_token_type_ids``). With prefix sharing a row holds ``[prompt, chosen, rejected]`` (and, packed, several
pairs), so lit_dpo places them: each prompt as the model would, alone; each completion token one past the prompt
plus its place in the completion: what the model gives ``prompt + completion`` in the padded layout. So Qwen2-VL
shares prompts (and their images: the vision encoder runs once per pair) like the other families.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_dpo.data.collate import CHOSEN, PROMPT, REJECTED, Batch

# the model types whose rope is multimodal, laid out as ``get_rope_index`` of transformers' Qwen2-VL does for images
MULTIMODAL_ROPE = frozenset({"qwen2_vl", "qwen2_5_vl"})


def uses_multimodal_rope(config: Any) -> bool:
    return config.model_type in MULTIMODAL_ROPE


def token_types(config: Any, input_ids: Tensor) -> Tensor:
    """``mm_token_type_ids``: 1 for image tokens, 0 for text (what the model places positions from)."""
    return (input_ids == config.image_token_id).int()


def multimodal_rope_inputs(config: Any, batch: Batch) -> dict[str, Tensor]:
    """What a multimodal-rope model needs beside ``batch``'s tensors when it holds images: the token types for a
    padded batch (the model places the positions), the ``(3, rows, T)`` positions for a prefix-shared one."""
    if batch.vision is None:  # text only: the three positions are the one the batch has (or the model's)
        return {}
    if batch.position_ids is None:
        return {"mm_token_type_ids": token_types(config, batch.input_ids)}
    return {"position_ids": shared_positions(config, batch)}


def shared_positions(config: Any, batch: Batch) -> Tensor:
    """``(3, rows, T)`` positions of a prefix-shared batch; its images in the order its prompts appear."""
    assert batch.vision is not None and batch.segments is not None and batch.position_ids is not None
    rows, width = batch.input_ids.shape
    flat = batch.position_ids.reshape(-1)  # (rows * T,): 0.. within each example's prompt, then each completion
    segments, ids = batch.segments.reshape(-1), batch.input_ids.reshape(-1)
    positions = flat.expand(3, -1).clone()  # (3, rows * T)
    grids = iter(batch.vision.tensors["image_grid_thw"].tolist())  # (t, h, w) patches of each image
    merge = config.vision_config.spatial_merge_size
    in_prompt = (segments >= 0) & (segments % 4 == PROMPT)
    examples, lengths = torch.unique_consecutive(segments[in_prompt], return_counts=True)  # prompts in row order
    starts = in_prompt.nonzero().squeeze(1).split(lengths.tolist())
    for example, where in zip((examples // 4).tolist(), starts):
        placed, following = _prompt_positions(ids[where].tolist(), config.image_token_id, grids, merge)
        positions[:, where] = placed.to(positions.device)
        completion = (segments == 4 * example + CHOSEN) | (segments == 4 * example + REJECTED)
        positions[:, completion] += following - len(where)  # the completions go on from the prompt's end
    return positions.view(3, rows, width)


def prompt_positions(config: Any, ids: Tensor, mask: Tensor, grids: Tensor) -> tuple[Tensor, Tensor]:
    """``(3, B, T)`` positions of left-padded prompts ``ids`` (``mask``: 1 on tokens) with their images' ``grids``
    (``image_grid_thw``, in row order), and ``(B,)`` the position after each prompt: where generation goes on."""
    positions = torch.zeros(3, *ids.shape, dtype=torch.long)
    following = torch.zeros(ids.shape[0], dtype=torch.long)
    each = iter(grids.tolist())
    for row in range(ids.shape[0]):
        kept = mask[row].bool().cpu()
        placed, following[row] = _prompt_positions(ids[row][kept].tolist(), config.image_token_id, each,
                                                   config.vision_config.spatial_merge_size)  # fmt: skip
        positions[:, row, kept] = placed
    return positions.to(ids.device), following.to(ids.device)


def _prompt_positions(ids: list[int], image_id: int, grids: Any, merge: int) -> tuple[Tensor, int]:
    """``(3, len(ids))`` positions of one prompt from 0, and the position that follows it."""
    parts, start, i = [], 0, 0
    while i < len(ids):
        if ids[i] == image_id:  # one image's tokens: its grid of merged patches
            t, h, w = next(grids)
            h, w = h // merge, w // merge
            grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"))
            parts.append(grid.reshape(3, -1) + start)
            start += max(h, w)
            i += t * h * w
        else:  # a run of text tokens
            end = next((j for j in range(i, len(ids)) if ids[j] == image_id), len(ids))
            parts.append(torch.arange(start, start + end - i).expand(3, -1))
            start += end - i
            i = end
    return torch.cat(parts, dim=1), start
