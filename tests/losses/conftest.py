"""Hand-worked loss inputs: per-pair log-probs as named tensors."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from lit_dpo.scoring import PairLogps, UnpairedLogps


def _pairs(pc, pr, rc, rr, nc=(1.0,), nr=(1.0,)) -> PairLogps:
    """``PairLogps`` in float64 from lists: policy chosen/rejected, reference chosen/rejected, token counts (one
    value is repeated for every pair)."""
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    n = len(pc)
    return PairLogps(t(pc), t(pr), t(rc), t(rr), t(nc * n if len(nc) == 1 else nc), t(nr * n if len(nr) == 1 else nr))


@pytest.fixture(scope="session")
def pairs() -> Callable[..., PairLogps]:
    return _pairs


@pytest.fixture(scope="session")
def hand_worked() -> PairLogps:
    """Three pairs, worked by hand (beta = 0.1 in most tests):
    chosen logratios   = pi_c - ref_c = [-1-(-2), -5-(-5), -3-(-1)] = [1, 0, -2]
    rejected logratios = pi_r - ref_r = [-4-(-2), -5-(-5), -1-(-3)] = [-2, 0, 2]
    logits h = [3, 0, -4];  beta * h = [0.3, 0, -0.4];  chosen tokens [2, 1, 4], rejected tokens 1 each"""
    return _pairs(
        [-1.0, -5.0, -3.0], [-4.0, -5.0, -1.0], [-2.0, -5.0, -1.0], [-2.0, -5.0, -3.0], nc=(2.0, 1.0, 4.0), nr=(1.0,)
    )


@pytest.fixture(scope="session")
def unpaired() -> Callable[..., UnpairedLogps]:
    """``unpaired(policy, ref, kl_policy, kl_ref, desirable)``: ``UnpairedLogps`` in float64, one token each."""

    def make(policy, ref, kl_policy, kl_ref, desirable) -> UnpairedLogps:
        t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
        return UnpairedLogps(
            t(policy), t(ref), t(kl_policy), t(kl_ref), t([1.0] * len(policy)), torch.tensor(desirable)
        )

    return make
