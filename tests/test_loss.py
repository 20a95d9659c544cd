import math

import pytest
import torch

from lit_dpo.errors import InputError
from lit_dpo.logps import PairLogps
from lit_dpo.loss import LOSSES, get_loss


def pairs(pc, pr, rc, rr, nc=(1.0,), nr=(1.0,)) -> PairLogps:
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    n = len(pc)
    return PairLogps(t(pc), t(pr), t(rc), t(rr), t(nc * n if len(nc) == 1 else nc), t(nr * n if len(nr) == 1 else nr))


# Hand-worked batch, beta = 0.1:
#   chosen logratios   = pi_c - ref_c = [-1-(-2), -5-(-5), -3-(-1)] = [1, 0, -2]
#   rejected logratios = pi_r - ref_r = [-4-(-2), -5-(-5), -1-(-3)] = [-2, 0, 2]
#   logits h = [3, 0, -4];  beta * h = [0.3, 0, -0.4]
LP = pairs(
    [-1.0, -5.0, -3.0], [-4.0, -5.0, -1.0], [-2.0, -5.0, -1.0], [-2.0, -5.0, -3.0], nc=(2.0, 1.0, 4.0), nr=(1.0,)
)


def test_sigmoid_hand_worked():
    losses, chosen, rejected = get_loss("sigmoid")(LP, 0.1)
    # -logsigmoid(x) = log(1 + exp(-x))
    expected = [math.log1p(math.exp(-0.3)), math.log(2), math.log1p(math.exp(0.4))]
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(chosen, torch.tensor([0.1, 0.0, -0.2], dtype=torch.float64))
    torch.testing.assert_close(rejected, torch.tensor([-0.2, 0.0, 0.2], dtype=torch.float64))


def test_hinge_hand_worked():
    losses, _, _ = get_loss("hinge")(LP, 0.1)
    # relu(1 - beta * h) = relu([0.7, 1, 1.4])
    torch.testing.assert_close(losses, torch.tensor([0.7, 1.0, 1.4], dtype=torch.float64))


def test_ipo_hand_worked_length_averaged():
    losses, chosen, _ = get_loss("ipo")(LP, 0.1)
    # chosen / tokens = [1/2, 0/1, -2/4], rejected / tokens = [-2, 0, 2]; h = [2.5, 0, -2.5]; 1/(2 beta) = 5
    torch.testing.assert_close(losses, torch.tensor([6.25, 25.0, 56.25], dtype=torch.float64))
    torch.testing.assert_close(chosen, torch.tensor([0.1, 0.0, -0.2], dtype=torch.float64))  # summed, not averaged


def test_robust_hand_worked():
    eps = 0.2
    losses, _, _ = get_loss("robust", eps)(LP, 0.1, eps)
    x = torch.tensor([0.3, 0.0, -0.4], dtype=torch.float64)
    logsig = torch.nn.functional.logsigmoid
    expected = (-(1 - eps) * logsig(x) + eps * logsig(-x)) / (1 - 2 * eps)
    torch.testing.assert_close(losses, expected)
    # middle pair: (0.8 log 2 - 0.2 log 2) / 0.6 = log 2
    assert losses[1].item() == pytest.approx(math.log(2))


def test_robust_without_smoothing_is_sigmoid():
    torch.testing.assert_close(get_loss("robust")(LP, 0.1)[0], get_loss("sigmoid")(LP, 0.1)[0])


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


REFERENCE_LOSSES = sorted(
    set(LOSSES) - {"simpo", "orpo", "kto", "apo_zero_unpaired"}
)  # test_loss_{reference_free,unpaired}.py


@pytest.mark.parametrize("name", REFERENCE_LOSSES)
def test_policy_equal_reference(name):
    """policy == reference: zero rewards, and the hand-worked loss value above (log 2 for DPO)."""
    assert set(AT_REFERENCE) == set(REFERENCE_LOSSES)
    logps = torch.tensor([-3.0, -7.5])
    lp = PairLogps(logps, logps - 1, logps, logps - 1, torch.tensor([3.0, 5.0]), torch.tensor([2.0, 2.0]))
    smoothing = SMOOTHING.get(name, 0.0)
    losses, chosen, rejected = get_loss(name, smoothing)(lp, 0.5, smoothing)
    torch.testing.assert_close(losses, torch.full((2,), AT_REFERENCE[name]))
    assert torch.all(chosen == 0) and torch.all(rejected == 0)


def test_weighted_sum_of_losses():
    weighted = get_loss(["sigmoid", "sft"], weights=[0.8, 0.2])(LP, 0.1)
    sigmoid, sft = get_loss("sigmoid")(LP, 0.1)[0], get_loss("sft")(LP, 0.1)[0]
    torch.testing.assert_close(weighted[0], 0.8 * sigmoid + 0.2 * sft)
    # sft: -(-1 - 5 - 3) / (2 + 1 + 4) = 9 / 7 for every pair
    torch.testing.assert_close(sft, torch.full((3,), 9 / 7, dtype=torch.float64))


def test_aot_sorts_across_the_batch():
    # policy margins [1, -3, 2] sorted [-3, 1, 2]; reference margins [0, 4, -1] sorted [-1, 0, 4]: delta [-2, 1, -2]
    lp = pairs([0.0, -3.0, 2.0], [-1.0, 0.0, 0.0], [0.0, 4.0, -1.0], [0.0, 0.0, 0.0])
    expected = -torch.nn.functional.logsigmoid(torch.tensor([-2.0, 1.0, -2.0], dtype=torch.float64))
    torch.testing.assert_close(get_loss("aot")(lp, 1.0)[0], expected)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_rewards_carry_no_gradient(name):
    pc = torch.tensor([-1.0, -2.0], requires_grad=True)
    pr = torch.tensor([-3.0, -1.0], requires_grad=True)
    lp = PairLogps(pc, pr, torch.tensor([-1.5, -1.5]), torch.tensor([-2.0, -2.0]), torch.ones(2), torch.ones(2))
    lp.desirable = torch.tensor([True, False])  # read by the unpaired losses only
    losses, chosen, rejected = LOSSES[name](lp, 0.1, SMOOTHING.get(name, 0.0))
    assert not chosen.requires_grad and not rejected.requires_grad
    losses.sum().backward()
    assert pc.grad is not None and torch.all(torch.isfinite(pc.grad))


def test_sigmoid_is_stable_for_huge_margins():
    lp = pairs([0.0], [-1e6], [0.0], [0.0])
    losses, _, _ = get_loss("sigmoid")(lp, 1.0)
    assert torch.isfinite(losses).all() and losses.item() == 0.0
    lp = pairs([-1e6], [0.0], [0.0], [0.0])
    assert get_loss("sigmoid")(lp, 1.0)[0].item() == pytest.approx(1e6)


def test_get_loss_refuses_bad_options():
    with pytest.raises(InputError, match="unknown loss_type"):
        get_loss("dpo")
    with pytest.raises(InputError, match="no effect with loss_type='sigmoid'"):
        get_loss("sigmoid", 0.1)
    with pytest.raises(InputError, match="0 <= label_smoothing < 0.5"):
        get_loss("robust", 0.5)
    with pytest.raises(InputError, match="exo_pair' needs 0 < label_smoothing < 1"):
        get_loss("exo_pair")
    with pytest.raises(InputError, match="one weight per loss_type"):
        get_loss(["sigmoid", "sft"], weights=[1.0])
