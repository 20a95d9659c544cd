"""TR-DPO (Gorbatovski et al. 2024): move the reference towards the policy, ``ref <- alpha * policy + (1 - alpha) * ref``,
for a separate reference model (``soft_update``) or the base of a LoRA policy (``soft_update_lora``)."""

from __future__ import annotations

from typing import Optional

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from lit_dpo import lora
from lit_dpo.errors import InputError


def check_sync_options(
    needs_reference: bool, precompute: Optional[bool], sync_steps: int, sync_alpha: float, name: str = "ref_sync_steps"
) -> None:
    """Refuse TR-DPO (or, by ``name``, iterative DPO's ``ref_sync_epochs``) settings that cannot work, before
    anything loads."""
    if sync_steps < 0 or not 0.0 < sync_alpha <= 1.0:
        raise InputError(f"{name} must be >= 0 and 0 < ref_sync_alpha <= 1, got {sync_steps}, {sync_alpha}")
    if sync_steps and precompute:
        raise InputError(f"{name} changes the reference during training: it cannot use precompute_ref_log_probs")
    if sync_steps and not needs_reference:
        raise InputError(f"{name} has no effect with a reference-free loss_type")


@torch.no_grad()
def soft_update(policy: torch.nn.Module, reference: torch.nn.Module, alpha: float) -> None:
    """``ref <- alpha * policy + (1 - alpha) * ref`` for two models of the same architecture.

    Sharded alike under FSDP, so each rank updates its own shards: no communication.
    """
    _reshard(policy, reference)
    for (name, target), source in zip(reference.named_parameters(), policy.parameters()):
        if target.shape != source.shape:
            raise InputError(f"ref_sync needs policy and reference of one architecture; {name} differs")
        target.lerp_(source.to(target.dtype), alpha)


@torch.no_grad()
def soft_update_lora(policy: torch.nn.Module, alpha: float) -> None:
    """TR-DPO with adapters, where the reference is the base: move ``alpha`` of each adapter into the base.

    ``W <- W + alpha * s * B @ A`` and ``B <- (1 - alpha) * B``: the reference (base) becomes
    ``alpha * policy + (1 - alpha) * ref`` exactly, and the policy ``W + s * B @ A`` is unchanged.
    """
    _reshard(policy)
    scale = lora.scaling(policy)
    for module in policy.modules():
        if not hasattr(module, "lora_A") or lora.ADAPTER not in module.lora_A:
            continue
        down, up = module.lora_A[lora.ADAPTER].weight, module.lora_B[lora.ADAPTER].weight  # (r, in), (out, r)
        base = module.get_base_layer().weight
        delta = alpha * scale * (_full(up).float() @ _full(down).float())  # (out, in)
        if isinstance(base, DTensor):  # every rank holds the same delta: keep its own shard of it
            delta = distribute_tensor(delta.to(base.dtype), base.device_mesh, base.placements, src_data_rank=None)
        base.add_(delta.to(base.dtype))
        up.mul_(1 - alpha)


def _reshard(*models: torch.nn.Module) -> None:
    """Put FSDP parameters back in their sharded form: FSDP2 keeps the root's gathered after a forward that
    no backward follows (the reference's), and the updates above work shard by shard."""
    from torch.distributed.fsdp import FSDPModule

    for model in models:
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
