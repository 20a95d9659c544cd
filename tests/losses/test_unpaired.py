"""lit_dpo/losses/unpaired.py: KTO and unpaired APO-zero, worked by hand."""

import math

import pytest
import torch

from lit_dpo.errors import InputError
from lit_dpo.losses import build_objective

F64 = torch.float64


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


@pytest.fixture
def three(unpaired):
    """Three examples: completion log-ratios [1, -2, 0.5]; mismatched (KL) log-ratios [0.5, 1.5, -1] -> mean 1/3."""
    return unpaired([-1.0, -4.0, -2.5], [-2.0, -2.0, -3.0], [-2.5, -1.5, -3.0], [-3.0, -3.0, -2.0], [True, False, True])


def test_kto_hand_worked(three):
    beta, z0 = 0.5, 1 / 3
    losses, chosen, rejected = build_objective("kto")(three, beta)
    expected = [1 - _sigmoid(beta * (1 - z0)), 1 - _sigmoid(beta * (z0 + 2)), 1 - _sigmoid(beta * (0.5 - z0))]
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=F64))
    torch.testing.assert_close(chosen, torch.tensor([0.5, -1.0, 0.25], dtype=F64))
    assert chosen is rejected or torch.equal(chosen, rejected)  # one reward per completion


def test_kto_reference_point_is_clamped_at_zero_and_weights_apply(unpaired):
    lp = unpaired([-1.0, -4.0], [-2.0, -2.0], [-5.0, -5.0], [-3.0, -3.0], [True, False])  # KL log-ratios -2: z0 = 0
    losses, _, _ = build_objective("kto", desirable_weight=2.0, undesirable_weight=3.0)(lp, 1.0)
    expected = [2 * (1 - _sigmoid(1.0)), 3 * (1 - _sigmoid(2.0))]
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=F64))


def test_kto_reference_point_given_by_the_caller_wins(unpaired):
    lp = unpaired([-1.0], [-2.0], [0.0], [0.0], [True])
    lp.reference_point = torch.tensor(0.25, dtype=F64)
    torch.testing.assert_close(build_objective("kto")(lp, 1.0)[0], torch.tensor([1 - _sigmoid(0.75)], dtype=F64))


def test_kto_reference_point_carries_no_gradient(unpaired):
    pc = torch.tensor([-1.0, -2.0], requires_grad=True)
    pr = torch.tensor([-3.0, -1.0], requires_grad=True)
    lp = unpaired([0.0, 0.0], [-1.5, -1.5], [0.0, 0.0], [-2.0, -2.0], [True, False])
    lp.policy, lp.kl_policy = pc, pr
    build_objective("kto")(lp, 0.1)[0].sum().backward()
    assert pr.grad is None and pc.grad is not None


def test_apo_zero_unpaired_hand_worked(three):
    losses, _, _ = build_objective("apo_zero_unpaired")(three, 0.5)
    expected = [1 - _sigmoid(0.5), _sigmoid(-1.0), 1 - _sigmoid(0.25)]
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=F64))


def test_unpaired_losses_do_not_combine():
    with pytest.raises(InputError, match="cannot be combined"):
        build_objective(["kto", "sft"])
