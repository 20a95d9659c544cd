"""AdamW, optionally stepped inside the backward: each parameter is updated as soon as its gradient is complete,
then its gradient is freed, so the gradients of the whole model never exist at once (torchtune's
``optimizer_in_bwd``): the same update with one model's worth of gradients less at the peak."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch import Tensor

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


class AdamWInBackward(torch.optim.Optimizer):
    """One AdamW per parameter, stepped by a post-accumulate-grad hook; ``step`` only runs the closure.

    Its one param group is the one schedulers and loggers see: its ``lr`` (and other settings) are read at every
    parameter's update. Its state dict has the layout of a plain ``torch.optim.AdamW`` over the same parameters,
    so a checkpoint resumes with either optimizer. Valid only when each backward ends an optimizer step: no
    gradient accumulation, no gradient clipping, no loss scaling, no gradient all-reduce (DDP/FSDP) after the hook.
    """

    def __init__(self, params: list[Tensor], names: Optional[list[str]] = None, **adamw_kwargs: Any) -> None:
        super().__init__(params, {k: v for k, v in adamw_kwargs.items() if k != "fused"})
        self.per_param = {p: torch.optim.AdamW([p], **adamw_kwargs) for p in self.param_groups[0]["params"]}
        self.names = dict(zip(self.per_param, names or [f"parameter {i}" for i in range(len(self.per_param))]))
        self.found_inf: dict[Tensor, Tensor] = {}  # per parameter, this step: 1 where its gradient was not finite
        self.hooks = [p.register_post_accumulate_grad_hook(self._update) for p in self.per_param]

    def _update(self, param: Tensor) -> None:
        inner = self.per_param[param]
        settings = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        inner.param_groups[0].update({k: v for k, v in settings.items() if k in inner.param_groups[0]})
        # a non-finite gradient must not reach the weights; the fused kernel skips on a device flag (no sync)
        found_inf = nonfinite(param.grad).float()
        self.found_inf[param] = found_inf
        if inner.defaults.get("fused"):
            inner.found_inf = found_inf
            inner.step()
        elif not found_inf.item():
            inner.step()
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

    def state_dict(self) -> dict[str, Any]:
        state = {}
        for index, inner in enumerate(self.per_param.values()):
            own = inner.state_dict()["state"]
            if own:
                state[index] = own[0]
        settings = next(iter(self.per_param.values())).param_groups[0] if self.per_param else {}
        group = {k: v for k, v in {**settings, **self.param_groups[0]}.items() if k != "params"}
        return {"state": state, "param_groups": [{**group, "params": list(range(len(self.per_param)))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.per_param):
            raise ValueError("the saved optimizer state does not match this model's trainable parameters")
        group = {k: v for k, v in groups[0].items() if k != "params"}
        self.param_groups[0].update(group)
        for index, inner in enumerate(self.per_param.values()):
            inner_group = {**inner.param_groups[0], **{k: v for k, v in group.items() if k in inner.param_groups[0]}}
            own = {0: state_dict["state"][index]} if index in state_dict["state"] else {}
            inner.load_state_dict({"state": own, "param_groups": [{**inner_group, "params": [0]}]})
