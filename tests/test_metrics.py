"""lit_dpo/metrics.py: per-pair metrics by hand, exact means over pairs (not batches), and the KL estimate."""

import pytest
import torch

from lit_dpo.losses import LossOutput
from lit_dpo.metrics import PreferenceMetrics, pair_metrics
from lit_dpo.scoring import PairLogps


def _lp(pc, pr, rc, rr, logit_sums=None, tokens=None):
    """``PairLogps`` of a batch; ``logit_sums`` and ``tokens`` (2B,): chosen sequences first."""
    n = len(pc)
    logit_sums = torch.zeros(2 * n) if logit_sums is None else torch.tensor(logit_sums)
    tokens = torch.ones(2 * n) if tokens is None else torch.tensor(tokens)
    lp = PairLogps(*(torch.tensor(x) for x in (pc, pr, rc, rr)), *tokens.chunk(2))
    lp.chosen_logit_sums, lp.rejected_logit_sums = logit_sums.chunk(2)
    return lp


def _output(lp, beta=1.0):
    losses = torch.arange(lp.policy_chosen.shape[0], dtype=torch.float32)
    return LossOutput(losses, beta * lp.chosen_logratios, beta * lp.rejected_logratios)


def test_pair_metrics_by_hand():
    lp = _lp([-1.0, -3.0], [-2.0, -1.0], [-1.5, -2.0], [-1.5, -2.0])
    values = pair_metrics(lp, _output(lp))
    # chosen rewards [0.5, -1], rejected [-0.5, 1]
    assert values["rewards/margins"].tolist() == [1.0, -2.0]
    assert values["rewards/accuracies"].tolist() == [1.0, 0.0]
    assert values["logps/rejected"].tolist() == [-2.0, -1.0]


def test_epoch_value_is_the_exact_mean_over_pairs_not_over_batches():
    metrics = PreferenceMetrics()
    # batch 1: 3 pairs, all correct; batch 2: 1 pair, wrong -> mean over pairs 0.75 (over batches it would be 0.5)
    first = _lp([0.0] * 3, [-1.0] * 3, [0.0] * 3, [0.0] * 3, [6.0, 2, 2, 0, 0, 0], [3.0, 1, 1, 2, 2, 2])
    second = _lp([-1.0], [0.0], [0.0], [0.0], [10.0, 4.0], [5.0, 2.0])
    for lp in (first, second):
        metrics.update(lp, _output(lp))
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
    lp = _lp([-1.0, -3.0], [-2.0, -1.0], [-1.5, -2.0], [-1.5, -2.0])
    # log-ratios chosen [0.5, -1], rejected [-0.5, 1]: per pair the mean of its two
    assert pair_metrics(lp, _output(lp))["kl"].tolist() == [0.0, 0.0]
    lp = _lp([-1.0], [-1.0], [-2.0], [-3.0])
    assert pair_metrics(lp, _output(lp))["kl"].tolist() == [1.5]  # (1 + 2) / 2
    lp = _lp([-1.0], [-1.0], [-1.0], [-1.0])
    lp.ref_chosen = lp.ref_rejected = None  # no reference model
    no_ref = pair_metrics(lp, LossOutput(torch.zeros(1), torch.zeros(1), torch.zeros(1)))
    metrics = PreferenceMetrics()
    metrics.update(lp, LossOutput(torch.zeros(1), torch.zeros(1), torch.zeros(1)))
    assert "kl" not in no_ref and "kl" not in metrics.compute() and "loss" in metrics.compute()
