"""Llama-family blocks with leaner backwards: fewer of their activations kept for the backward, where a step's memory
peaks (at its start), and the cheap ones recomputed there. The matmuls are the same; gradients equal autograd's to
float rounding (tested).

SwiGLU MLP: for ``down(silu(gate(x)) * up(x))`` autograd keeps gate(x) (silu's input), silu(gate(x)) and up(x)
(the product's inputs) and the product (down's input) until the backward. ``_SwiGLU`` keeps gate(x) and up(x) and
recomputes silu and the product there: two elementwise passes over (T, I), for two (T, I) tensors a layer less
(SmolLM2, I = 1,536, 30 layers: 118 MiB on the benchmark's 337-token rows).

RMSNorm: autograd keeps its input, 1 / rms and the normalised input; ``_RMSNorm`` keeps the first two (SmolLM2: 61
norms, 45 MiB on those rows).
"""

from __future__ import annotations

import types

import torch
from torch import Tensor
from torch.nn.functional import silu

from lit_dpo.scoring.gemm import linear, weight_grad
from lit_dpo.scoring.lm_head import forward_autocast

# transformers' MLPs that compute exactly ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``
SWIGLU_MLPS = {"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"}
# and their RMSNorms: ``weight * (x / rms(x))``, computed in fp32, the normalised input cast back to x's dtype first
RMS_NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"}


def lean_blocks_apply(world_size: int, compiled: bool) -> bool:
    """Whether a fit gives its policy the lean blocks: in one process (FSDP's sharded weights are left to
    autograd), not compiled. ``DPOModule`` does as this says, and so does the memory plan."""
    return world_size == 1 and not compiled


def use_lean_blocks(model: torch.nn.Module, mlps: bool = True) -> int:
    """Give ``model``'s RMSNorms and (``mlps``) its SwiGLU MLPs whose projections are plain bias-free linears (not
    LoRA's, not 4-bit) the lean backwards; returns how many modules."""
    count = 0
    for module in model.modules():
        name = type(module).__name__
        if name in SWIGLU_MLPS and mlps and _plain(module):
            module.forward = types.MethodType(_lean_mlp_forward, module)
        elif name in RMS_NORMS:
            module.forward = types.MethodType(_lean_norm_forward, module)
        else:
            continue
        count += 1
    return count


def _plain(mlp: torch.nn.Module) -> bool:
    projections = (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    return mlp.config.hidden_act == "silu" and all(type(p) is torch.nn.Linear and p.bias is None for p in projections)


def _lean_mlp_forward(self: torch.nn.Module, x: Tensor) -> Tensor:
    return _SwiGLU.apply(x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight)


def _lean_norm_forward(self: torch.nn.Module, x: Tensor) -> Tensor:
    return _RMSNorm.apply(x, self.weight, self.variance_epsilon)


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_gate, w_up, w_down):  # type: ignore[override]
        gate, up = linear(x, w_gate), linear(x, w_up)  # (..., I), in autocast's dtype when it is on
        ctx.save_for_backward(x, w_gate, w_up, w_down, gate, up)
        ctx.autocast = forward_autocast(x)
        return linear(silu(gate) * up, w_down)  # (..., H)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, w_gate, w_up, w_down, gate, up = ctx.saved_tensors
        with ctx.autocast:  # the forward's matmul precision
            sigmoid = torch.sigmoid(gate)
            activated = gate * sigmoid  # silu(gate), recomputed
            grad_out = grad_out.to(gate.dtype)
            grad_product = grad_out @ w_down.to(gate.dtype)  # (..., I)
            grad_w_down = weight_grad(grad_out, activated * up)  # (H, I)
            grad_up = grad_product * activated
            grad_gate = grad_product.mul_(up).mul_(sigmoid * (1 + gate * (1 - sigmoid)))  # silu'(g) = s(1 + g(1 - s))
            grad_x = grad_gate @ w_gate.to(gate.dtype) + grad_up @ w_up.to(gate.dtype)
            grad_w_gate, grad_w_up = weight_grad(grad_gate, x), weight_grad(grad_up, x)
        return grad_x.to(x.dtype), grad_w_gate.to(w_gate.dtype), grad_w_up.to(w_up.dtype), grad_w_down.to(w_down.dtype)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):  # type: ignore[override]
        x32 = x.float()
        inverse_rms = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        ctx.save_for_backward(x, weight, inverse_rms)
        return weight * (x32 * inverse_rms).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, weight, inverse_rms = ctx.saved_tensors
        normed = x.float() * inverse_rms  # recomputed, fp32
        grad_weight = (grad_out * normed.to(x.dtype)).flatten(0, -2).sum(0)
        grad_normed = (grad_out * weight).float()
        # d/dx of x / rms(x): (g - n * mean(g * n)) / rms(x), n the normalised input
        grad_x = (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True)).mul_(inverse_rms)
        return grad_x.to(x.dtype), grad_weight.to(weight.dtype), None
