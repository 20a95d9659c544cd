"""AdamW, optionally stepped inside the backward: each parameter is updated as soon as its gradient is complete,
then its gradient is freed, so the gradients of the whole model never exist at once (torchtune's
``optimizer_in_bwd``): the same update with one model's worth of gradients less at the peak."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.optim.adamw import adamw as functional_adamw

from lit_dpo.errors import InputError, nonfinite
from lit_dpo.parallel import is_sharded


def adamw(
    params: list[Tensor],
    lr: float,
    weight_decay: float,
    sharded: bool,
    in_backward: bool,
    names: Optional[list[str]] = None,
) -> torch.optim.Optimizer:
    # the fused kernel, where the parameters are plain tensors on a CPU or GPU: much faster (README)
    fused = not sharded and all(p.device.type in ("cpu", "cuda") for p in params)
    if in_backward:
        return AdamWInBackward(params, names, lr=lr, weight_decay=weight_decay, fused=fused)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def build(
    policy: torch.nn.Module,
    trainer: Optional[Any],
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    schedule: str,
    optimizer_in_backward: Optional[bool],
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the policy's trainable weights (stepped in the backward where ``in_backward`` says so) and its
    learning-rate schedule (``lr_lambda``)."""
    named = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
    params, names = [p for _, p in named], [n for n, _ in named]
    hooked = in_backward(trainer, optimizer_in_backward)
    optimizer = adamw(params, lr, weight_decay, is_sharded(policy), hooked, names)
    factor = lr_lambda(warmup_steps, schedule, lambda: total_steps(trainer))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def total_steps(trainer: Any) -> int:
    """The fit's optimizer steps. Read lazily, at the first decaying step: asking in ``configure_optimizers`` would
    reset the restored dataloader state on resume (Lightning #20550)."""
    return trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches


def in_backward(trainer: Optional[Any], wanted: Optional[bool]) -> bool:
    """Whether to step the optimizer in the backward: ``wanted``, or when None, whenever that is exact."""
    if trainer is None:  # outside a fit, nothing says it is exact
        return bool(wanted)
    blockers = {
        "several processes (the gradient all-reduce comes after the update)": trainer.world_size > 1,
        "gradient accumulation": trainer.accumulate_grad_batches > 1,
        "gradient clipping": bool(trainer.gradient_clip_val),
        "fp16 loss scaling": str(trainer.precision).startswith("16"),
    }
    blocking = [name for name, blocks in blockers.items() if blocks]
    if wanted and blocking:
        raise InputError(f"optimizer_in_backward does not work with {', '.join(blocking)}: leave it unset")
    return not blocking if wanted is None else wanted


def lr_lambda(warmup: int, schedule: str, total_steps: Callable[[], int]) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warmup over ``warmup`` steps, then constant, linear or cosine decay
    to 0 at ``total_steps()`` (called only once decay starts)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps() - warmup))
        return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class AdamWInBackward(torch.optim.AdamW):
    """AdamW stepped per parameter by a post-accumulate-grad hook; ``step`` only runs the closure.

    It is a ``torch.optim.AdamW`` (param group, state layout, state dict), so schedulers, loggers and checkpoints
    see one, and a checkpoint resumes with either optimizer; each hook runs torch's functional AdamW on its one
    parameter with the group's settings of the moment. The moments are allocated up front: allocated lazily in the
    first backward they would sit among that step's activations and fragment the heap (a higher peak RSS). Valid
    only when each backward ends an optimizer step: no gradient accumulation, no gradient clipping, no loss
    scaling, no gradient all-reduce (DDP/FSDP) after the hook.
    """

    def __init__(self, params: list[Tensor], names: Optional[list[str]] = None, **adamw_kwargs: Any) -> None:
        super().__init__(params, **adamw_kwargs)
        group = self.param_groups[0]
        self.names = dict(zip(group["params"], names or [f"parameter {i}" for i in range(len(group["params"]))]))
        self.found_inf: dict[Tensor, Tensor] = {}  # per parameter, this step: 1 where its gradient was not finite
        for param in group["params"]:
            self._state(param)
        self.hooks = [p.register_post_accumulate_grad_hook(self._update) for p in group["params"]]

    def _state(self, param: Tensor) -> dict[str, Tensor]:
        """``param``'s state, created as ``torch.optim.AdamW`` creates it where it has none."""
        state, group = self.state[param], self.param_groups[0]
        if not state:
            scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            on_device = group["fused"] or group["capturable"]  # AdamW keeps ``step`` on the CPU otherwise
            state["step"] = torch.zeros((), dtype=torch.float32 if group["fused"] else scalar,
                                        device=param.device if on_device else "cpu")  # fmt: skip
            moments = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())
            for name in moments:
                state[name] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def _update(self, param: Tensor) -> None:
        group, state = self.param_groups[0], self._state(param)
        # a non-finite gradient must not reach the weights; the fused kernel skips on a device flag (no sync)
        found_inf = nonfinite(param.grad).float()
        self.found_inf[param] = found_inf
        if group["fused"] or not found_inf.item():
            beta1, beta2 = group["betas"]
            functional_adamw(
                [param], [param.grad], [state["exp_avg"]], [state["exp_avg_sq"]],
                [state["max_exp_avg_sq"]] if group["amsgrad"] else [], [state["step"]],
                foreach=group["foreach"], capturable=group["capturable"], differentiable=group["differentiable"],
                fused=group["fused"], found_inf=found_inf if group["fused"] else None,
                has_complex=torch.is_complex(param), amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2,
                lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
            )  # fmt: skip
        param.grad = None  # the point: this gradient's memory is free before the next one is computed

    def nonfinite_parameters(self) -> list[str]:
        """The parameters whose gradient was not finite since the last call (their update was skipped)."""
        flags = torch.stack(list(self.found_inf.values())).bool().tolist() if self.found_inf else []
        bad = [self.names[p] for p, flag in zip(self.found_inf, flags) if flag]
        self.found_inf.clear()
        return bad

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()  # its backward updates every parameter

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
