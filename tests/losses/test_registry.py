"""lit_dpo/losses/registry.py: every registered loss at once, the objective (sums, weights) and what it refuses."""

import inspect
import math
from dataclasses import replace

import pytest
import torch

from lit_dpo import fit
from lit_dpo.errors import InputError
from lit_dpo.losses import LOSSES, OPTIONS, build_objective
from lit_dpo.module import DPOModule
from lit_dpo.scoring import PairLogps, UnpairedLogps

LOG2 = math.log(2)
# loss at policy == reference (every log-ratio 0), beta = 0.5, with the label_smoothing each loss is given below
AT_REFERENCE = {
    "sigmoid": LOG2,
    "robust": LOG2,  # (0.9 log 2 - 0.1 log 2) / 0.8
    "hinge": 1.0,
    "ipo": 1.0,  # (0 - 1/(2 * 0.5))^2
    "sigmoid_norm": LOG2,
    "exo_pair": 0.5 * (-LOG2 - math.log1p(-0.1)) + 0.5 * (-LOG2 - math.log(0.1)),
    "nca_pair": 2 * LOG2,  # (1 + 0.5 + 0.5) * -logsigmoid(0)
    "bco_pair": 2 * LOG2,
    "sppo_hard": 2.0,  # 2 * (0.5 / 0.5)^2
    "aot": LOG2,
    "aot_unpaired": LOG2,
    "apo_zero": 1.0,  # 1 - 1/2 + 1/2
    "apo_down": 1.0,  # 1/2 + 1 - 1/2
    "discopop": 0.5 * LOG2 + 0.5,  # blend sigmoid(0) = 1/2 of log 2 and exp(0)
    "sft": 10.5 / 8,  # -(-3 - 7.5) / (3 + 5): the chosen NLL per token, which the reference does not enter
}
SMOOTHING = {"robust": 0.1, "exo_pair": 0.1, "aot": 0.1, "aot_unpaired": 0.1}
# the losses with a reference and pairs (the others: test_reference_free.py, test_unpaired.py)
REFERENCE_LOSSES = sorted(n for n, spec in LOSSES.items() if spec.reference != "free" and not spec.unpaired)


@pytest.mark.parametrize("name", REFERENCE_LOSSES)
def test_policy_equal_reference(name):
    """policy == reference: zero rewards, and the hand-worked loss value above (log 2 for DPO)."""
    assert set(AT_REFERENCE) == set(REFERENCE_LOSSES)
    logps = torch.tensor([-3.0, -7.5])
    lp = PairLogps(logps, logps - 1, logps, logps - 1, torch.tensor([3.0, 5.0]), torch.tensor([2.0, 2.0]))
    losses, chosen, rejected = build_objective(name, label_smoothing=SMOOTHING.get(name, 0.0))(lp, 0.5)
    torch.testing.assert_close(losses, torch.full((2,), AT_REFERENCE[name]))
    assert torch.all(chosen == 0) and torch.all(rejected == 0)


def test_weighted_sum_of_losses(hand_worked):
    weighted = build_objective(["sigmoid", "sft"], [0.8, 0.2])(hand_worked, 0.1)
    sigmoid, sft = build_objective("sigmoid")(hand_worked, 0.1)[0], build_objective("sft")(hand_worked, 0.1)[0]
    torch.testing.assert_close(weighted[0], 0.8 * sigmoid + 0.2 * sft)
    # sft: -(-1 - 5 - 3) / (2 + 1 + 4) = 9 / 7 for every pair
    torch.testing.assert_close(sft, torch.full((3,), 9 / 7, dtype=torch.float64))


def _inputs_for(name, policy_chosen, policy_rejected):
    reference_chosen, reference_rejected = torch.tensor([-1.5, -1.5]), torch.tensor([-2.0, -2.0])
    if LOSSES[name].unpaired:
        desirable = torch.tensor([True, False])
        return UnpairedLogps(
            policy_chosen, reference_chosen, policy_rejected, reference_rejected, torch.ones(2), desirable
        )
    return PairLogps(policy_chosen, policy_rejected, reference_chosen, reference_rejected, torch.ones(2), torch.ones(2))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_rewards_carry_no_gradient(name):
    pc = torch.tensor([-1.0, -2.0], requires_grad=True)
    pr = torch.tensor([-3.0, -1.0], requires_grad=True)
    losses, chosen, rejected = build_objective(name, label_smoothing=SMOOTHING.get(name, 0.0))(
        _inputs_for(name, pc, pr), 0.1
    )
    assert not chosen.requires_grad and not rejected.requires_grad
    losses.sum().backward()
    assert pc.grad is not None and torch.all(torch.isfinite(pc.grad))


def test_build_objective_refuses_bad_options():
    with pytest.raises(InputError, match="unknown loss_type"):
        build_objective("dpo")
    with pytest.raises(InputError, match="no effect with loss_type='sigmoid'"):
        build_objective("sigmoid", label_smoothing=0.1)
    with pytest.raises(InputError, match="0 <= label_smoothing < 0.5"):
        build_objective("robust", label_smoothing=0.5)
    with pytest.raises(InputError, match="exo_pair' needs 0 < label_smoothing < 1"):
        build_objective("exo_pair")
    with pytest.raises(InputError, match="one weight per loss_type"):
        build_objective(["sigmoid", "sft"], [1.0])
    for name in ("aot", "aot_unpaired", "simpo"):  # label smoothing as a flip probability: at most 1/2
        with pytest.raises(InputError, match=f"loss_type='{name}' needs 0 <= label_smoothing <= 0.5, got 0.7"):
            build_objective(name, label_smoothing=0.7)
        build_objective(name, label_smoothing=0.5)


def test_what_the_objective_needs():
    """Asked of the objective, from the specs: no lists of names kept in step by hand."""
    assert build_objective("orpo").scores_prompt and not build_objective("sigmoid").scores_prompt
    assert build_objective("kto").unpaired and not build_objective(["sigmoid", "sft"]).unpaired
    with pytest.raises(InputError, match="weigh the two completions of a pair"):
        build_objective("kto", use_weighting=True)


def test_a_new_loss_is_one_function_and_one_entry(monkeypatch, hand_worked):
    """The README's "Adding a loss" example, as written there."""
    import torch.nn.functional as F

    from lit_dpo.losses import LossOutput, LossSpec
    from lit_dpo.losses.common import preference_logits, rewards

    def margin_sigmoid_loss(lp, beta, simpo_gamma=0.5):  # DPO with a target margin: -logsigmoid(beta h - gamma)
        return LossOutput(-F.logsigmoid(beta * preference_logits(lp) - simpo_gamma), *rewards(lp, beta))

    monkeypatch.setitem(LOSSES, "margin_sigmoid", LossSpec(margin_sigmoid_loss))
    objective = build_objective("margin_sigmoid", simpo_gamma=0.3)
    assert objective.needs_reference and LOSSES["margin_sigmoid"].options == {"simpo_gamma": 0.5}
    expected = -F.logsigmoid(torch.tensor([0.3, 0.0, -0.4], dtype=torch.float64) - 0.3)
    torch.testing.assert_close(objective(hand_worked, 0.1).losses, expected)


def test_every_loss_option_is_a_module_option_that_reaches_its_loss(monkeypatch, capsys):
    """Declared once (a loss function's keyword), each option is a ``--model.*`` option with the loss's default,
    shown in --help, and the value given reaches the loss function that reads it."""
    module_defaults = {name: p.default for name, p in inspect.signature(DPOModule).parameters.items()}
    with pytest.raises(SystemExit):
        fit.main(["--help"])
    shown = capsys.readouterr().out
    for name in OPTIONS:
        for spec in (s for s in LOSSES.values() if name in s.options):
            assert spec.options[name] == module_defaults[name], (name, spec.fn.__name__)
        assert f"--model.{name} " in shown

    received = {}
    for loss_type, spec in LOSSES.items():
        if spec.options:
            monkeypatch.setitem(LOSSES, loss_type, _recording(spec, received))
    for loss_type, spec in LOSSES.items():
        options = {name: 0.25 for name in spec.options}  # not any default, within every limit
        module = DPOModule(loss_type=loss_type, **options)
        received.clear()
        module.objective(_inputs_for(loss_type, torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])), 0.5)
        assert received == options, loss_type


def _recording(spec, received):
    """``spec`` with a loss function that records the options it is called with."""

    def fn(lp, beta, **options):
        received.update(options)
        return spec.fn(lp, beta, **options)

    fn.__signature__ = inspect.signature(spec.fn)  # the spec reads its options from the signature
    return replace(spec, fn=fn)
