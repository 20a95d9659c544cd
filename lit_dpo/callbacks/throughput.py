"""``Throughput``: ``perf/`` metrics once per logging step, from counts the collator made on the CPU (no
synchronisation with the device on the hot path; the wall time of a window of steps is what the device took)."""

from __future__ import annotations

import time
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

# dense peak TFLOP/s per GPU, (16-bit tensor cores, fp32), from the vendors' data sheets; matched by name
PEAK_TFLOPS = {
    "H200": (989.0, 67.0),
    "H100 PCIe": (756.0, 51.0),
    "H100": (989.0, 67.0),
    "A100": (312.0, 19.5),
    "L40S": (362.0, 91.6),
    "L4": (121.0, 30.3),
    "A10G": (70.0, 31.2),
    "A10": (125.0, 31.2),
    "RTX 4090": (165.2, 82.6),
    "RTX 3090": (71.0, 35.6),
    "V100": (125.0, 15.7),
    "T4": (65.0, 8.1),
}


def device_peak_tflops(precision: str, override: Optional[float] = None) -> Optional[float]:
    """Peak dense TFLOP/s of this process's device: ``override`` if given, else the GPU table; None if unknown."""
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    half = "16" in precision
    for model, (tensor, fp32) in PEAK_TFLOPS.items():  # longest names first where one contains another
        if model in name:
            return tensor if half else fp32
    return None


class Throughput(Callback):
    """Throughput and MFU as ``perf/`` metrics (``--perf.*``).

    ``perf/tokens_per_sec`` (prompt and completion tokens, no padding), ``perf/pairs_per_sec``,
    ``perf/padding_fraction`` (of the positions the forward computes) and, when the device's peak is known,
    ``perf/mfu``: model FLOPs (6 x parameters per computed position for the policy, 2 x for a live reference;
    attention not counted) over the peak, summed over ranks.

    Args:
        peak_tflops: Peak dense TFLOP/s of one device, for ``perf/mfu`` (default: a table of common GPUs; on CPU
            only from this option).
    """

    def __init__(self, peak_tflops: Optional[float] = None) -> None:
        self.peak_tflops = peak_tflops
        self._counts = [0, 0, 0, 0]  # tokens, pairs, positions, padded positions since the last log
        self._since: Optional[float] = None
        self._validation_started: Optional[float] = None
        self._flops_per_position = 0.0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        policy = sum(p.numel() for p in pl_module.policy.parameters())
        reference = pl_module.reference.model if pl_module.reference is not None else None
        live = sum(p.numel() for p in reference.parameters()) if reference is not None else 0
        self._flops_per_position = 6.0 * policy + 2.0 * live
        self._since = time.perf_counter()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # a validation (and WinRate's generations: perf/generation_seconds) is no training time
        if self._since is not None and self._validation_started is not None:
            self._since += time.perf_counter() - self._validation_started
        self._validation_started = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        for i, count in enumerate((batch.tokens, batch.num_pairs, batch.positions, batch.input_ids.numel())):
            self._counts[i] += count
        if trainer.global_step % trainer.log_every_n_steps or trainer.fit_loop.epoch_loop._should_accumulate():
            return
        now = time.perf_counter()
        seconds, self._since = now - self._since, now
        tokens, pairs, positions, numel = self._counts
        self._counts = [0, 0, 0, 0]
        sync = trainer.world_size > 1
        rates = {"perf/tokens_per_sec": tokens / seconds, "perf/pairs_per_sec": pairs / seconds}
        pl_module.log_dict(rates, on_step=True, on_epoch=False, sync_dist=sync, reduce_fx="sum")  # of the run
        means = {"perf/padding_fraction": 1 - positions / max(numel, 1)}
        peak = device_peak_tflops(str(trainer.precision), self.peak_tflops)
        if peak:
            means["perf/mfu"] = self._flops_per_position * positions / seconds / (peak * 1e12)
        pl_module.log_dict(means, on_step=True, on_epoch=False, sync_dist=sync, reduce_fx="mean")  # over devices
