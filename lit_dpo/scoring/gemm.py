"""Linear layers' fp32 outputs on x86 CPUs through oneDNN instead of MKL.

PyTorch's x86 CPU wheels send an fp32 ``linear`` to MKL's sgemm, and a bf16 one to oneDNN. On the AMD CPU this
project is benchmarked on, MKL runs the shapes of a step well below the machine's peak and oneDNN's linear kernel
(``torch.ops.mkldnn._linear_pointwise``, the one inductor's CPU backend calls) much closer to it (figures:
docs/performance.md). The backward stays on ``mm``: for the weights' gradients neither is ahead, and for the
inputs' gradients oneDNN was no faster within a step while its kernels for transposed weights keep about a weight's
memory each while cached. The products are the same to float rounding (another summation order).

``linear`` is a drop-in for ``torch.nn.functional.linear`` that takes this path for CPU fp32 tensors outside
autocast (``_Linear``, with autograd's saved tensors and backward); ``use_onednn_linears`` points a model's plain
``nn.Linear`` layers at it. ``LIT_DPO_ONEDNN=0`` in the environment keeps PyTorch's own path everywhere.
"""

from __future__ import annotations

import os
import platform
import types
from typing import Optional

import torch
from torch import Tensor
from torch.nn.functional import linear as torch_linear

ENABLED = (
    os.environ.get("LIT_DPO_ONEDNN", "1") != "0"
    and platform.machine().lower() in ("x86_64", "amd64")
    and torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")
)
_PLAIN = (Tensor, torch.nn.Parameter)  # not DTensors, not quantized weights' subclasses
if ENABLED:
    # oneDNN keeps each primitive it builds (one per shape, and the rows change from batch to batch) in a cache of
    # 1,024 by default, holding their memory; a step uses about ten at a time. Read when oneDNN builds its first.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")


def _applies(x: Tensor, weight: Tensor) -> bool:
    return (
        ENABLED
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and type(weight) in _PLAIN
        and type(x) in _PLAIN
        and not torch.is_autocast_enabled("cpu")
    )


def _onednn_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")  # (..., out)


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``torch.nn.functional.linear(x, weight, bias)``, its output through oneDNN where that applies."""
    if not _applies(x, weight):
        return torch_linear(x, weight, bias)
    needs_grad = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and needs_grad:
        return _Linear.apply(x, weight, bias)
    return _onednn_linear(x, weight, bias)


def weight_grad(grad: Tensor, inputs: Tensor) -> Tensor:
    """A linear layer's weight gradient: ``grad`` ``(..., out)`` by ``inputs`` ``(..., in)`` -> ``(out, in)``."""
    return grad.flatten(0, -2).T @ inputs.flatten(0, -2).to(grad.dtype)


class _Linear(torch.autograd.Function):
    """oneDNN's ``linear``, with autograd's saved tensors (the input and the weight) and backward (``mm``)."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        grad_x = grad @ weight if needs_x else None
        grad_weight = weight_grad(grad, x) if needs_weight else None
        grad_bias = grad.flatten(0, -2).sum(0) if ctx.has_bias and needs_bias else None
        return grad_x, grad_weight, grad_bias


def use_onednn_linears(model: torch.nn.Module, device: torch.device, compiled: bool = False) -> int:
    """Point ``model``'s plain ``nn.Linear`` layers (LoRA adapters added later wrap them as their base layers;
    4-bit layers are not plain) at ``linear`` when it runs on a CPU and is not compiled (inductor chooses its own
    kernels); returns how many layers. In other dtypes or under autocast they keep PyTorch's path at every call."""
    if not ENABLED or device.type != "cpu" or compiled:
        return 0
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear]
    for layer in layers:
        layer.forward = types.MethodType(_linear_forward, layer)
    return len(layers)


def _linear_forward(self: torch.nn.Linear, x: Tensor) -> Tensor:
    return linear(x, self.weight, self.bias)
