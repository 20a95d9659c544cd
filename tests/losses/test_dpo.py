"""lit_dpo/losses/dpo.py: the DPO logit's losses, worked by hand (inputs: the ``hand_worked`` fixture)."""

import math

import pytest
import torch

from lit_dpo.losses import build_objective

F64 = torch.float64


def test_sigmoid_hand_worked(hand_worked):
    losses, chosen, rejected = build_objective("sigmoid")(hand_worked, 0.1)
    # -logsigmoid(x) = log(1 + exp(-x))
    expected = [math.log1p(math.exp(-0.3)), math.log(2), math.log1p(math.exp(0.4))]
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=F64))
    torch.testing.assert_close(chosen, torch.tensor([0.1, 0.0, -0.2], dtype=F64))
    torch.testing.assert_close(rejected, torch.tensor([-0.2, 0.0, 0.2], dtype=F64))


def test_hinge_hand_worked(hand_worked):
    losses, _, _ = build_objective("hinge")(hand_worked, 0.1)
    # relu(1 - beta * h) = relu([0.7, 1, 1.4])
    torch.testing.assert_close(losses, torch.tensor([0.7, 1.0, 1.4], dtype=F64))


def test_ipo_hand_worked_length_averaged(hand_worked):
    losses, chosen, _ = build_objective("ipo")(hand_worked, 0.1)
    # chosen / tokens = [1/2, 0/1, -2/4], rejected / tokens = [-2, 0, 2]; h = [2.5, 0, -2.5]; 1/(2 beta) = 5
    torch.testing.assert_close(losses, torch.tensor([6.25, 25.0, 56.25], dtype=F64))
    torch.testing.assert_close(chosen, torch.tensor([0.1, 0.0, -0.2], dtype=F64))  # summed, not averaged


def test_robust_hand_worked(hand_worked):
    eps = 0.2
    losses, _, _ = build_objective("robust", label_smoothing=eps)(hand_worked, 0.1)
    x = torch.tensor([0.3, 0.0, -0.4], dtype=F64)
    logsig = torch.nn.functional.logsigmoid
    expected = (-(1 - eps) * logsig(x) + eps * logsig(-x)) / (1 - 2 * eps)
    torch.testing.assert_close(losses, expected)
    # middle pair: (0.8 log 2 - 0.2 log 2) / 0.6 = log 2
    assert losses[1].item() == pytest.approx(math.log(2))


def test_robust_without_smoothing_is_sigmoid(hand_worked):
    torch.testing.assert_close(
        build_objective("robust")(hand_worked, 0.1)[0], build_objective("sigmoid")(hand_worked, 0.1)[0]
    )


def test_aot_sorts_across_the_batch(pairs):
    # policy margins [1, -3, 2] sorted [-3, 1, 2]; reference margins [0, 4, -1] sorted [-1, 0, 4]: delta [-2, 1, -2]
    lp = pairs([0.0, -3.0, 2.0], [-1.0, 0.0, 0.0], [0.0, 4.0, -1.0], [0.0, 0.0, 0.0])
    expected = -torch.nn.functional.logsigmoid(torch.tensor([-2.0, 1.0, -2.0], dtype=F64))
    torch.testing.assert_close(build_objective("aot")(lp, 1.0)[0], expected)


def test_sigmoid_is_stable_for_huge_margins(pairs):
    losses, _, _ = build_objective("sigmoid")(pairs([0.0], [-1e6], [0.0], [0.0]), 1.0)
    assert torch.isfinite(losses).all() and losses.item() == 0.0
    assert build_objective("sigmoid")(pairs([-1e6], [0.0], [0.0], [0.0]), 1.0)[0].item() == pytest.approx(1e6)
