"""lit_dpo/losses/absolute.py: the losses of each completion's own log-ratio, worked by hand on ``hand_worked``:
chosen logratios c = [1, 0, -2], rejected logratios r = [-2, 0, 2]; with beta = 0.5, beta c = [0.5, 0, -1] and
beta r = [-1, 0, 1]."""

import math

import torch

from lit_dpo.losses.absolute import apo_down_loss, apo_zero_loss, bco_pair_loss, nca_pair_loss, sppo_hard_loss

BETA = 0.5


def _logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _expected(formula) -> torch.Tensor:
    return torch.tensor([formula(c, r) for c, r in ((0.5, -1.0), (0.0, 0.0), (-1.0, 1.0))], dtype=torch.float64)


def test_nca_pair(hand_worked):
    expected = _expected(lambda c, r: -_logsigmoid(c) - 0.5 * _logsigmoid(-c) - 0.5 * _logsigmoid(-r))
    torch.testing.assert_close(nca_pair_loss(hand_worked, BETA).losses, expected)


def test_bco_pair(hand_worked):
    expected = _expected(lambda c, r: -_logsigmoid(c) - _logsigmoid(-r))
    torch.testing.assert_close(bco_pair_loss(hand_worked, BETA).losses, expected)


def test_sppo_hard_regresses_log_ratios_to_plus_minus_one_over_two_beta(hand_worked):
    # (c - 1)^2 + (r + 1)^2 on the unscaled log-ratios: [0 + 1, 1 + 1, 9 + 9]
    torch.testing.assert_close(
        sppo_hard_loss(hand_worked, BETA).losses, torch.tensor([1.0, 2.0, 18.0], dtype=torch.float64)
    )


def test_apo_zero_and_apo_down(hand_worked):
    zero = _expected(lambda c, r: 1 - _sigmoid(c) + _sigmoid(r))
    down = _expected(lambda c, r: _sigmoid(c) + 1 - _sigmoid(c - r))
    torch.testing.assert_close(apo_zero_loss(hand_worked, BETA).losses, zero)
    torch.testing.assert_close(apo_down_loss(hand_worked, BETA).losses, down)


def test_rewards_are_beta_times_each_log_ratio(hand_worked):
    _, chosen, rejected = nca_pair_loss(hand_worked, BETA)
    torch.testing.assert_close(chosen, torch.tensor([0.5, 0.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(rejected, torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64))
