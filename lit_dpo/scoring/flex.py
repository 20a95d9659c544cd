"""The shared-prefix mask as a FlexAttention ``BlockMask`` (``--model.attn_implementation=flex_attention``).

The dense ``(rows, 1, T, T)`` mask (sdpa, eager) makes attention cost T^2 whatever it masks; a block mask tells the
kernel which 128 x 128 tiles are empty (another example of a packed row, a rejected query against chosen keys,
padding), and those are skipped. Same mask, element by element, as ``lit_dpo.data.collate.shared_prefix_mask``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from lit_dpo.data.collate import CHOSEN, PAD, REJECTED, SHARED


def block_mask(segments: Tensor) -> BlockMask:
    """The block mask of ``Batch.segments`` ``(rows, T)``: example * 4 + segment kind, -1 for padding, ``SHARED`` *
    4 for a row's shared prompt start."""
    example = torch.div(segments, 4, rounding_mode="floor")  # (rows, T); padding: -1
    kind = segments.remainder(4)  # PROMPT, CHOSEN, REJECTED; padding: PAD

    def may_attend(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        kind_q, kind_kv = kind[b, q], kind[b, kv]
        same = (example[b, q] == example[b, kv]) | (example[b, kv] == SHARED)
        causal = (kv <= q) & same & (kind_q != PAD) & (kind_kv != PAD)
        allowed = causal & ~((kind_q == REJECTED) & (kind_kv == CHOSEN))
        return allowed | ((q == kv) & (kind_q == PAD))  # padding sees itself: no fully masked row

    rows, width = segments.shape
    return create_block_mask(may_attend, rows, None, width, width, device=segments.device)
