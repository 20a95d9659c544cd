"""lit_dpo/callbacks/health.py: the step-0 agreement check and the alarms, each warning once."""

import warnings
from types import SimpleNamespace

import pytest
import torch

from lit_dpo import fit
from lit_dpo.callbacks import TrainingHealth, WinRate
from lit_dpo.reference import check_start
from lit_dpo.scoring.logps import PairLogps


def _logps(policy, reference):
    p, r = torch.tensor(policy), torch.tensor(reference)
    return PairLogps(p, p - 1, r, r - 1, torch.ones(len(policy)), torch.ones(len(policy)))


def test_step_0_agreement_names_the_first_differing_pair():
    batch = SimpleNamespace(indices=torch.tensor([11, 12, 13]))
    assert check_start(_logps([-5.0, -6.0, -7.0], [-5.0, -6.0001, -7.0]), batch, torch.float32) is None
    message = check_start(_logps([-5.0, -6.0, -7.5], [-5.0, -6.0, -7.0]), batch, torch.float32)
    assert "example 13's chosen completion: log-prob -7.5000 vs -7.0000" in message and "dropout" in message
    assert check_start(_logps([-5.0], [-5.3]), batch, torch.bfloat16) is None  # bf16 rounding is not a bug


def test_dropout_left_on_is_caught_before_the_first_update(tmp_path, tokenizer, random_llama, standard_rows,
                                                           write_jsonl):  # fmt: skip
    model = random_llama(len(tokenizer), 0)
    model.config.attention_dropout = 0.5  # a model trained with dropout, and --model.disable_dropout=false
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    data = write_jsonl(tmp_path / "t.jsonl", standard_rows(8))
    args = [f"--model.model_name_or_path={tmp_path / 'm'}", f"--data.path={data}", "--data.val_split=0",
            f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=1", "--model.disable_dropout=false",
            "--model.precompute_ref_log_probs=false", "--trainer.enable_progress_bar=false"]  # fmt: skip
    with pytest.warns(UserWarning, match=r"at step 0 the policy and the reference.*disagree on example \d+'s"):
        fit.main(args)


class _Module:
    def __init__(self):
        self.logged = {}

    def log_dict(self, values, **kwargs):
        self.logged.update(values)

    def log(self, name, value, **kwargs):
        self.logged[name] = value


def _trainer(step, **metrics):
    values = {k.replace("__", "/"): torch.tensor(v) for k, v in metrics.items()}
    return SimpleNamespace(callback_metrics=values, global_step=step, sanity_checking=False, callbacks=[])


def test_likelihood_displacement_and_kl_warn_once_and_are_logged():
    health, module = TrainingHealth(displacement_nats=5.0, kl_nats=20.0), _Module()
    steps = [(-10.0, -10.0, 0.0, 1.0), (-12.0, -10.0, 0.5, 5.0), (-16.0, -10.0, 2.0, 25.0), (-18.0, -10.0, 3.0, 30.0)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step, (chosen, ref_chosen, margin, kl) in enumerate(steps):
            trainer = _trainer(step, train__logps__chosen=chosen, train__ref_logps__chosen=ref_chosen,
                               train__rewards__margins=margin, train__kl=kl)  # fmt: skip
            health.on_train_batch_end(trainer, module)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2  # one per alarm, at step 2, not repeated at step 3
    assert messages[0].startswith("likelihood displacement at step 2: the policy's chosen answers are 6.0 nats")
    assert messages[1].startswith("KL from the reference is 25.0 nats per completion at step 2")
    assert module.logged["health/chosen_logps_shift"] == -8.0 and module.logged["health/margin_growth"] == 3.0


def test_generations_much_longer_than_the_reference_warn():
    winrate = WinRate()
    winrate.last = {"val/gen_length/policy": 60.0, "val/gen_length/reference": 20.0}
    trainer, module = _trainer(40), _Module()
    trainer.callbacks = [winrate]
    with pytest.warns(UserWarning, match="3.0x as long as the reference's at step 40"):
        TrainingHealth(length_ratio=1.5).on_validation_epoch_end(trainer, module)
    assert module.logged["health/length_ratio"] == 3.0
