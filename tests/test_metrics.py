import pytest
import torch

from lit_dpo.logps import PairLogps
from lit_dpo.metrics import PreferenceMetrics, pair_metrics


def _batch(pc, pr, rc, rr, beta=1.0):
    lp = PairLogps(*(torch.tensor(x) for x in (pc, pr, rc, rr)), torch.ones(len(pc)), torch.ones(len(pc)))
    chosen, rejected = beta * lp.chosen_logratios, beta * lp.rejected_logratios
    losses = torch.arange(len(pc), dtype=torch.float32)
    return pair_metrics(losses, chosen, rejected, lp)


def test_pair_metrics_by_hand():
    values = _batch([-1.0, -3.0], [-2.0, -1.0], [-1.5, -2.0], [-1.5, -2.0])
    # chosen rewards [0.5, -1], rejected [-0.5, 1]
    assert values["rewards/margins"].tolist() == [1.0, -2.0]
    assert values["rewards/accuracies"].tolist() == [1.0, 0.0]
    assert values["logps/rejected"].tolist() == [-2.0, -1.0]


def test_epoch_value_is_the_exact_mean_over_pairs_not_over_batches():
    metrics = PreferenceMetrics()
    # batch 1: 3 pairs, all correct; batch 2: 1 pair, wrong -> mean over pairs 0.75 (over batches it would be 0.5)
    metrics.update(
        _batch([0.0] * 3, [-1.0] * 3, [0.0] * 3, [0.0] * 3),
        torch.tensor([6.0, 2, 2, 0, 0, 0]),
        torch.tensor([3.0, 1, 1, 2, 2, 2]),
    )
    metrics.update(_batch([-1.0], [0.0], [0.0], [0.0]), torch.tensor([10.0, 4.0]), torch.tensor([5.0, 2.0]))
    out = metrics.compute()
    assert out["rewards/accuracies"].item() == pytest.approx(0.75)
    assert out["rewards/margins"].item() == pytest.approx((3 * 1.0 - 1.0) / 4)
    assert out["loss"].item() == pytest.approx((0 + 1 + 2 + 0) / 4)
    # logits: mean over every completion token, as TRL: chosen (6 + 2 + 2 + 10) / (3 + 1 + 1 + 5)
    assert out["logits/chosen"].item() == pytest.approx(20 / 10)
    assert out["logits/rejected"].item() == pytest.approx(4 / 8)
    metrics.reset()
    assert not metrics.has_updates


def test_kl_estimate_by_hand_and_absent_without_reference():
    values = _batch([-1.0, -3.0], [-2.0, -1.0], [-1.5, -2.0], [-1.5, -2.0])
    # log-ratios chosen [0.5, -1], rejected [-0.5, 1]: per pair the mean of its two
    assert values["kl"].tolist() == [0.0, 0.0]
    values = _batch([-1.0], [-1.0], [-2.0], [-3.0])
    assert values["kl"].tolist() == [1.5]  # (1 + 2) / 2
    lp = PairLogps(*(torch.tensor([-1.0]) for _ in range(4)), torch.ones(1), torch.ones(1))
    no_ref = pair_metrics(torch.zeros(1), torch.zeros(1), torch.zeros(1), lp, with_reference=False)
    metrics = PreferenceMetrics()
    metrics.update(no_ref, torch.zeros(2), torch.ones(2))
    assert "kl" not in no_ref and "kl" not in metrics.compute() and "loss" in metrics.compute()
