"""Attention over packed rows one example at a time, on a CPU (sdpa, prefix sharing).

A packed row holds several examples under a block-diagonal mask. PyTorch's CPU attention kernels compute every
query against every key of the row and mask afterwards, so a row of four 84-token examples costs (4 * 84)^2 score
entries where (84^2) * 4 are used: a quarter. Here each row is split into its examples (the runs of one example in
``Batch.segments``, trailing padding as one more run) and sdpa runs on each with its own corner of the same mask:
the same attention (the mask between examples is empty), 2.7x less attention time on the benchmark's short rows.
A row's shared prompt start (``lit_dpo.data.collate.SHARED``) is a run of its own, and its keys and values go
before each example's.

transformers calls this function where its models call ``sdpa_attention_forward`` once the model's attention
implementation is ``BLOCKED_SDPA`` (registered below with sdpa's mask builder); without ``lit_dpo_blocks`` in the
forward's keyword arguments (generation, padded rows, one example a row) it is sdpa itself. The keyword argument
reaches every decoder layer's attention through transformers' ``**kwargs``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor
from torch.nn.functional import scaled_dot_product_attention
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from lit_dpo.data.collate import SHARED
from lit_dpo.hf import is_vision_config

BLOCKED_SDPA = "lit_dpo_blocked_sdpa"
BLOCKS_ARGUMENT = "lit_dpo_blocks"
BIASES = ("softcap", "position_bias", "s_aux")  # attention extras sdpa_attention_forward handles (or refuses) itself


class RowBlocks(NamedTuple):
    shared: int  # tokens of the row's shared prompt start, at its beginning: every example attends to them
    sizes: list[int]  # the lengths of the row's runs of one example after it (padding: one run), in order


Blocks = list[RowBlocks]


def use_blocked_attention(model: PreTrainedModel, device: torch.device, compiled: bool = False) -> bool:
    """Switch a text model that uses sdpa and runs on a CPU ``device`` to ``BLOCKED_SDPA`` (else leave it); whether
    it uses it now. Vision-language models keep sdpa: their vision towers share the setting and never see the rows.
    GPUs keep one kernel a layer (``--model.attn_implementation=flex_attention`` skips the empty tiles there), and
    ``compiled`` layers keep sdpa: they would recompile for every row's split into examples."""
    attention = model.config._attn_implementation
    if attention == "sdpa" and device.type == "cpu" and not compiled and not is_vision_config(model.config):
        model.set_attn_implementation(BLOCKED_SDPA)
    return model.config._attn_implementation == BLOCKED_SDPA


def row_blocks(segments: Tensor) -> Optional[Blocks]:
    """The runs of ``Batch.segments`` ``(rows, T)`` (example * 4 + kind, -1 for padding, ``SHARED`` for the shared
    prompt start) by example, or None when no row holds more than one (nothing to gain)."""
    blocks = []
    for row in torch.div(segments, 4, rounding_mode="floor").cpu():  # padding: -1
        examples, sizes = (t.tolist() for t in torch.unique_consecutive(row, return_counts=True))
        shared = sizes[0] if examples[0] == SHARED else 0
        blocks.append(RowBlocks(shared, sizes[1:] if shared else sizes))
    return blocks if any(len(block.sizes) > 1 for block in blocks) else None


def blocked_sdpa(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Optional[Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    *args: Any,
    lit_dpo_blocks: Optional[Blocks] = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """sdpa on ``query`` ``(rows, heads, T, D)``, ``key``/``value`` ``(rows, kv_heads, T, D)`` and the boolean
    mask ``(rows, 1, T, T)``, example by example where ``lit_dpo_blocks`` gives the runs; ``(rows, T, heads, D)``.
    Grouped key/value heads go to the kernel as they are (``enable_gqa``), not repeated to every query head: a third
    of the keys and values kept for the backward where SmolLM2 has 3 of 9."""
    if lit_dpo_blocks is None or attention_mask is None or any(kwargs.get(k) is not None for k in BIASES):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, *args, **kwargs)
    grouped = query.shape[1] != key.shape[1]

    def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:  # (1, n, heads, D)
        return scaled_dot_product_attention(q, k, v, mask, dropout, scale=scaling, enable_gqa=grouped).transpose(1, 2)

    rows = []
    # split/cat (not indexing): their backwards are one cat/split, where an index's backward zero-fills (T, D)
    for q, k, v, mask, (shared, sizes) in zip(query.split(1), key.split(1), value.split(1),
                                              attention_mask.split(1), lit_dpo_blocks):  # fmt: skip
        (q0, *qs), (k0, *ks), (v0, *vs) = (t.split([shared, *sizes], 2) for t in (q, k, v))
        parts = [attend(q0, k0, v0, mask[..., :shared, :shared])] if shared else []
        starts = [shared + sum(sizes[:i]) for i in range(len(sizes))]
        for qb, kb, vb, s, n in zip(qs, ks, vs, starts, sizes):
            corner = mask[..., s : s + n, s : s + n]
            if shared:  # the example's queries see the shared start's keys too
                kb, vb = torch.cat([k0, kb], 2), torch.cat([v0, vb], 2)
                corner = torch.cat([mask[..., s : s + n, :shared], corner], -1)
            parts.append(attend(qb, kb, vb, corner))
        rows.append(torch.cat(parts, 1))
    return torch.cat(rows), None


AttentionInterface.register(BLOCKED_SDPA, blocked_sdpa)
AttentionMaskInterface.register(BLOCKED_SDPA, sdpa_mask)
