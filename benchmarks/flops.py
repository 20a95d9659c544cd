"""Floating-point operations a run executes, by PyTorch's FLOP formulas (matmuls and attention).

``benchmarks/vs_trl.py --count_flops`` runs each system once more under ``counted`` and divides by the pairs
trained: the work each system does for the same job, and so how fast each runs its work (GFLOP/s). Counted as
executed: a padded row's padding, gradient checkpointing's second forward and attention's masked scores count.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

_CPU_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_CPU_FLASH_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


# PyTorch counts its GPU attention kernels, not the CPU's: the same formulas (every query against every key)
@flop_counter.register_flop_formula(_CPU_FLASH)
def _cpu_flash(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)  # shapes


@flop_counter.register_flop_formula(_CPU_FLASH_BACKWARD)
def _cpu_flash_backward(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
                        **kwargs: Any) -> int:  # fmt: skip
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


class _Counter(TorchDispatchMode):
    """Sums PyTorch's formulas over the operators run. ``FlopCounterMode`` also tracks modules, and with gradient
    checkpointing its hooks kept every recomputed activation alive (TRL's defaults ran out of 24 GiB)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        out = func(*args, **(kwargs or {}))
        formula = flop_counter.flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **(kwargs or {}), out_val=out)
        return out


@contextlib.contextmanager
def counted() -> Iterator[Callable[[], int]]:
    """Count the operations run inside; yields a function that returns the total so far."""
    with _Counter() as counter:
        yield lambda: counter.total
