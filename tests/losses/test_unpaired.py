"""lit_dpo/losses/unpaired.py: KTO and unpaired APO-zero, worked by hand."""

import csv
import math

import pytest
import torch

from lit_dpo import fit
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


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def unpaired(rows):
    """Pairs as unpaired rows: each chosen completion desirable, each rejected one not (shuffled together)."""
    import random

    out = [
        {"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}
        for r in rows
        for k in ("chosen", "rejected")
    ]
    random.Random(0).shuffle(out)
    return out


def test_kto_from_the_command_line(tiny_model_dir, tmp_path, capsys, standard_rows, write_jsonl, fit_args):
    train = write_jsonl(tmp_path / "train.jsonl", unpaired(standard_rows(40)))
    val = write_jsonl(tmp_path / "val.jsonl", unpaired(standard_rows(8, 9)))
    extra = ["--model.loss_type=kto", "--model.learning_rate=2e-3", "--trainer.max_steps=16"]
    fit.main(fit_args(tiny_model_dir, train, val, tmp_path, *extra))
    rows = _rows(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    train_rows = [r for r in rows if r["train/loss"]]
    assert len(train_rows) == 16 and all(r["train/kl"] for r in train_rows)
    assert float(train_rows[0]["train/loss"]) == pytest.approx(0.5, abs=1e-4)  # policy == reference: 1 - sigmoid(0)
    final = [r for r in rows if r["val/loss"]][-1]
    assert float(final["val/rewards/margins"]) > 0  # desirable completions gained on undesirable ones
    assert not final.get("val/rewards/accuracies")  # undefined without pairs
    # a loss for pairs on unpaired rows, and the other way round: one line, exit 2
    for loss_type, path in (("sigmoid", train), ("kto", write_jsonl(tmp_path / "pairs.jsonl", standard_rows(8)))):
        with pytest.raises(SystemExit) as exit_info:
            fit.main(fit_args(tiny_model_dir, path, "null", tmp_path / loss_type, f"--model.loss_type={loss_type}"))
        assert exit_info.value.code == 2
        assert "need unpaired rows (prompt, completion, label)" in capsys.readouterr().err.strip().splitlines()[-1]
