"""``check_start``: before any update, policy and reference must score the same pairs the same when they start
from the same weights; if not, a template, dropout, dtype or loading bug makes every reward wrong."""

from __future__ import annotations

from typing import Optional

import torch

from lit_dpo.data.collate import Batch
from lit_dpo.scoring.logps import PairLogps

_TOLERANCE = {torch.float32: (1e-2, 1e-3), torch.float16: (0.5, 2e-2), torch.bfloat16: (1.0, 4e-2)}  # atol, rtol


def check_start(lp: PairLogps, batch: Batch, dtype: torch.dtype) -> Optional[str]:
    """At step 0, with a reference that starts as the policy: the first pair whose log-probs differ, if any."""
    if not lp.has_reference:
        return None
    atol, rtol = _TOLERANCE.get(dtype, _TOLERANCE[torch.float32])
    for name, policy, reference in (("chosen", lp.policy_chosen, lp.ref_chosen),
                                    ("rejected", lp.policy_rejected, lp.ref_rejected)):  # fmt: skip
        off = ((policy.detach() - reference).abs() > atol + rtol * reference.abs()).nonzero()
        if len(off):
            i = int(off[0])
            return (
                f"at step 0 the policy and the reference, which start from the same weights, disagree on example "
                f"{int(batch.indices[i])}'s {name} completion: log-prob {float(policy[i]):.4f} vs "
                f"{float(reference[i]):.4f}. Every reward is off by the difference: look for dropout left on "
                f"(--model.disable_dropout), a dtype or precision mismatch, a different chat template, or a "
                f"reference loaded from other weights"
            )
    return None
