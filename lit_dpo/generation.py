"""Batched generation from token ids, shared by the win-rate callback and online DPO: left-padded batches, the
KV cache, seeded sampling that leaves the training RNG alone, and sharded (FSDP) models decoded by their own
forward with the same number of steps on every rank."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from lit_dpo.data.prompts import Prompt
from lit_dpo.data.vision import vision_inputs
from lit_dpo.errors import InputError
from lit_dpo.scoring.image_blocks import has_image_blocks
from lit_dpo.scoring.mrope import prompt_positions, token_types, uses_multimodal_rope


@dataclass(frozen=True)
class Sampling:
    """How to decode: greedy (``do_sample=False``) or sampled with ``temperature`` and nucleus ``top_p``."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    def check(self, owner: str) -> None:
        from lit_dpo.errors import InputError

        if self.max_new_tokens < 1 or self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise InputError(f"{owner}: max_new_tokens must be >= 1, temperature > 0 and 0 < top_p <= 1, got "
                             f"{self.max_new_tokens}, {self.temperature}, {self.top_p}")  # fmt: skip

    @property
    def options(self) -> dict:
        """HF ``generate`` keyword arguments."""
        if not self.do_sample:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompts: list[list[int]],
    sampling: Sampling,
    pad_id: int,
    eos_id: Optional[int],
    batch_size: int = 16,
    seed: int = 0,
    lockstep_rows: Optional[int] = None,
    images: Optional[Sequence[tuple[bytes, ...]]] = None,
    processor: Any = None,
) -> list[list[int]]:
    """One completion per prompt (token ids up to and including EOS), in the prompts' order; ``images``: each
    prompt's images, for a vision-language model, turned into its inputs by its ``processor``'s image processor.

    ``lockstep_rows``: for a model sharded over ranks, the most prompts any rank holds; every rank then runs that
    many rows' batches and every batch the full ``max_new_tokens`` steps, so that the collectives of the sharded
    forwards pair up (an idle rank decodes a dummy prompt; with images, its first prompt again, so that its vision
    encoder runs when the others' do: every prompt must then have images, and every rank at least one prompt)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers: list[list[int]] = []
    rows = len(prompts) if lockstep_rows is None else max(lockstep_rows, 1)
    filler = ([[pad_id]], []) if images is None or not any(images) else (prompts[:1], images[:1])
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # the training's random state is left as it was
        for start in range(0, rows, batch_size):
            batch = prompts[start : start + batch_size]
            pictured = images[start : start + batch_size] if images is not None else []
            batch, pictured = (batch, pictured) if batch else filler
            width = max(map(len, batch))
            ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in batch], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
            extra = _image_inputs(processor, pictured, device) if any(pictured) else {}
            if extra and uses_multimodal_rope(model.config):  # Qwen2-VL's family places positions from these
                extra["mm_token_type_ids"] = token_types(model.config, ids)
            if extra and has_image_blocks(model.config):  # Gemma 3: each image's tokens see each other
                extra["token_type_ids"] = token_types(model.config, ids)
            if lockstep_rows is not None:  # generate() bypasses FSDP's hooks under PEFT: the model's own forward
                out = _decode_in_lockstep(model, ids, mask, sampling, extra)
            else:
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=sampling.max_new_tokens,
                                     pad_token_id=pad_id, **sampling.options, **extra)  # fmt: skip
            answers += [until_eos(row.tolist(), eos_id, pad_id) for row in out[:, width:]]
    model.train(was_training)
    return answers[: len(prompts)]


def _image_inputs(processor: Any, images: Sequence[tuple[bytes, ...]], device: torch.device) -> dict[str, Any]:
    """The image processor's tensors that the model's forward takes (``generate`` checks: Gemma 3's image processor
    also counts its crops, which only its processor reads)."""
    if processor is None:
        raise InputError("prompts with images need a vision-language model's processor")
    tensors = vision_inputs(processor.image_processor, images).to(device).tensors
    return {name: value for name, value in tensors.items() if name not in processor.unused_input_names}


def check_lockstep_images(prompts: Sequence[Prompt]) -> None:
    """Under FSDP the ranks decode in lockstep, their vision encoders running together at each batch's first
    forward: every prompt needs images, or none does."""
    if not all(prompt.images for prompt in prompts):
        raise InputError("under FSDP, generations need images in every prompt or in none (the ranks' sharded vision "
                         "encoders run together); use DDP or one device for prompts with and without images")  # fmt: skip


def _decode_in_lockstep(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, sampling: Sampling, extra: dict[str, Any]
) -> torch.Tensor:
    """``max_new_tokens`` forwards with the KV cache, whatever the sequences do: the same count on every rank."""
    from transformers import DynamicCache

    cache, step_ids, out = DynamicCache(), ids, ids
    multimodal = "image_grid_thw" in extra and uses_multimodal_rope(model.config)  # Qwen2-VL: 3 positions a token
    if multimodal:
        prompt_places, following = prompt_positions(model.config, ids, mask, extra["image_grid_thw"])
    for step in range(sampling.max_new_tokens):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]  # left padding: prompts start at 0
        if multimodal:  # the prompt's places, then one past the prompt's end and on
            positions = prompt_places if step == 0 else (following + step - 1)[None, :, None].expand(3, -1, 1)
        logits = model(
            input_ids=step_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
            **(extra if step_ids is ids else {}),  # images: with the prompt, the first forward only
        ).logits[:, -1].float()  # fmt: skip
        step_ids = next_token(logits, sampling)  # (B, 1)
        out, mask = torch.cat([out, step_ids], 1), torch.cat([mask, torch.ones_like(step_ids)], 1)
    return out


def next_token(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """``(B, V)`` logits -> ``(B, 1)`` tokens: the most likely, or a sample from the temperature-scaled nucleus."""
    if not sampling.do_sample:
        return logits.argmax(-1, keepdim=True)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    kept, order = probs.sort(dim=-1, descending=True)
    kept[kept.cumsum(-1) - kept > sampling.top_p] = 0  # nucleus: the smallest set holding top_p of the mass
    return order.gather(-1, torch.multinomial(kept, 1))


def until_eos(tokens: list[int], eos: Optional[int], pad: int) -> list[int]:
    """The generated tokens up to and including the first EOS (padding after it is not part of the answer)."""
    if eos is not None and eos in tokens:
        return tokens[: tokens.index(eos) + 1]
    while tokens and tokens[-1] == pad and pad != eos:
        tokens = tokens[:-1]
    return tokens
