"""lit_dpo/losses/reference_free.py: SimPO, ORPO and the SFT term, worked by hand."""

import math

import torch

from lit_dpo.errors import InputError
from lit_dpo.losses import build_objective

F64 = torch.float64


def test_simpo_hand_worked(hand_worked):
    # length-averaged: chosen [-1/2, -5/1, -3/4], rejected [-4, -5, -1]; beta = 2, gamma = 0.5
    # x = 2 * ([-0.5, -5, -0.75] - [-4, -5, -1]) - 0.5 = [6.5, -0.5, 0]
    losses, chosen, rejected = build_objective("simpo", simpo_gamma=0.5)(hand_worked, 2.0)
    expected = [math.log1p(math.exp(-6.5)), math.log1p(math.exp(0.5)), math.log(2)]
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=F64))
    torch.testing.assert_close(chosen, torch.tensor([-1.0, -10.0, -1.5], dtype=F64))  # beta * average logp
    torch.testing.assert_close(rejected, torch.tensor([-8.0, -10.0, -2.0], dtype=F64))


def test_simpo_ignores_the_reference(pairs, hand_worked):
    moved = pairs([-1.0, -5.0, -3.0], [-4.0, -5.0, -1.0], [9.0, 9.0, 9.0], [-9.0, 0.0, 3.0], nc=(2.0, 1.0, 4.0))
    torch.testing.assert_close(build_objective("simpo")(moved, 2.0)[0], build_objective("simpo")(hand_worked, 2.0)[0])


def test_simpo_label_smoothing_hand_worked(hand_worked):
    # x = 0 for the third pair: -(0.9 + 0.1) * logsigmoid(0) = log 2 whatever the smoothing
    losses, _, _ = build_objective("simpo", label_smoothing=0.1, simpo_gamma=0.5)(hand_worked, 2.0)
    assert losses[2].item() == math.log(2)
    assert losses[0].item() == (0.9 * math.log1p(math.exp(-6.5)) + 0.1 * math.log1p(math.exp(6.5)))


def test_orpo_hand_worked(pairs):
    # one pair, one token each: p_chosen = 0.5 (odds 1), p_rejected = 0.25 (odds 1/3): log odds ratio = log 3;
    # NLL = -log 0.5 over the one chosen token; loss = log 2 - beta * logsigmoid(log 3) = log 2 - beta * log(3/4)
    lp = pairs([math.log(0.5)], [math.log(0.25)], [0.0], [0.0])
    losses, chosen, rejected = build_objective("orpo")(lp, 0.1)
    assert losses.item() == torch.tensor(math.log(2) - 0.1 * math.log(0.75), dtype=F64).item()
    assert chosen.item() == 0.1 * math.log(0.5) and rejected.item() == 0.1 * math.log(0.25)


def test_orpo_nll_counts_prompt_tokens_when_given(pairs):
    lp = pairs([math.log(0.5)], [math.log(0.25)], [0.0], [0.0])
    lp.prompt, lp.prompt_tokens = torch.tensor([3 * math.log(0.2)], dtype=F64), torch.tensor([3.0], dtype=F64)
    # NLL over 4 tokens: -(log 0.5 + 3 log 0.2) / 4
    nll = -(math.log(0.5) + 3 * math.log(0.2)) / 4
    torch.testing.assert_close(
        build_objective("orpo")(lp, 0.1)[0], torch.tensor([nll - 0.1 * math.log(0.75)], dtype=F64)
    )


def test_which_losses_load_a_reference():
    def needs(loss_type):
        return build_objective(loss_type).needs_reference

    assert not needs("simpo") and not needs(["orpo"]) and not needs(["simpo", "sft"])
    assert needs("sigmoid") and needs(["simpo", "sigmoid"]) and needs("sft")


def test_label_smoothing_refused_where_it_has_no_effect():
    try:
        build_objective("orpo", label_smoothing=0.1)
    except InputError as error:
        assert "no effect" in str(error)
    else:
        raise AssertionError("orpo accepted label_smoothing")
