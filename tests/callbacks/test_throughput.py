"""lit_dpo/callbacks/throughput.py: perf/ metrics from the collator's counts, once per logging step."""

from types import SimpleNamespace

import pytest
import torch

from lit_dpo.callbacks.throughput import PEAK_TFLOPS, Throughput, device_peak_tflops


class _Module:
    def __init__(self):
        self.policy = torch.nn.Linear(10, 10)  # 110 parameters
        self.reference = None  # a cached reference: no live model
        self.logged = {}

    def log_dict(self, values, **kwargs):
        self.logged.update(values)


def test_rates_padding_and_mfu_from_counts(monkeypatch):
    clock = iter([100.0, 102.0])
    monkeypatch.setattr("lit_dpo.callbacks.throughput.time.perf_counter", lambda: next(clock))
    callback, module = Throughput(peak_tflops=1e-9), _Module()  # 1000 FLOP/s
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(_should_accumulate=lambda: False))
    trainer = SimpleNamespace(global_step=1, log_every_n_steps=1, fit_loop=loop, world_size=1, precision="32-true")
    callback.on_train_start(trainer, module)
    batch = SimpleNamespace(tokens=30, num_pairs=4, positions=24, input_ids=torch.zeros(4, 8))
    callback.on_train_batch_end(trainer, module, None, batch, 0)
    assert module.logged["perf/tokens_per_sec"] == 15.0 and module.logged["perf/pairs_per_sec"] == 2.0
    assert module.logged["perf/padding_fraction"] == pytest.approx(1 - 24 / 32)
    assert module.logged["perf/mfu"] == pytest.approx(6 * 110 * 24 / 2 / 1000)


def test_validation_time_is_no_training_time(monkeypatch):
    clock = iter([100.0, 101.0, 109.0, 110.0])  # train start, validation 101-109, batch end at 110
    monkeypatch.setattr("lit_dpo.callbacks.throughput.time.perf_counter", lambda: next(clock))
    callback, module = Throughput(), _Module()
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(_should_accumulate=lambda: False))
    trainer = SimpleNamespace(global_step=1, log_every_n_steps=1, fit_loop=loop, world_size=1, precision="32-true")
    callback.on_train_start(trainer, module)
    callback.on_validation_start(trainer, module)
    callback.on_validation_end(trainer, module)
    callback.on_train_batch_end(trainer, module, None, SimpleNamespace(tokens=30, num_pairs=4, positions=24,
                                input_ids=torch.zeros(4, 8)), 0)  # fmt: skip
    assert module.logged["perf/pairs_per_sec"] == 2.0  # 4 pairs in 2 s of training, not in 10 s


def test_peak_flops_from_the_option_or_the_gpu_table():
    assert device_peak_tflops("32-true", 50.0) == 50.0
    if not torch.cuda.is_available():
        assert device_peak_tflops("bf16-mixed") is None  # a CPU's peak comes only from the option
    assert PEAK_TFLOPS["H100"] == (989.0, 67.0)


def test_a_batch_counts_its_tokens_and_padding(make_batch, standard_rows):
    rows = standard_rows(4)
    padded, shared = make_batch(rows, "padded"), make_batch(rows, "shared")
    assert padded.tokens == shared.tokens > 0  # the pairs' tokens, whatever the layout
    assert shared.positions < padded.positions <= padded.input_ids.numel()  # the prompt is computed once
