"""The reference's lifecycle beyond "frozen copy": cached log-probs in place of the model, and TR-DPO updates.

``cache_logps`` fills the data module's pairs with reference log-probs (from disk, or one pass then to disk;
see ``lit_dpo.reference_cache``) and frees the reference. ``soft_update`` / ``soft_update_lora`` move the
reference towards the policy (TR-DPO, Gorbatovski et al. 2024): ``ref <- alpha * policy + (1 - alpha) * ref``.
"""

from __future__ import annotations

import gc
from typing import Any

import torch
from lightning.pytorch.utilities import move_data_to_device
from torch.distributed.tensor import DTensor, distribute_tensor

from lit_dpo import lora, reference_cache
from lit_dpo.errors import InputError


def caches_logps(module: Any) -> bool:
    """Whether ``module`` (a ``DPOModule`` whose run is being set up) uses cached reference log-probs.

    ``precompute_ref_log_probs=None`` means yes for a fit that trains on every pair at least once (the pass then
    adds no compute) with a separate, fixed reference on paired rows (the one case where it frees memory).
    """
    hp, trainer = module.hparams, module._trainer
    if not module.uses_reference or hp.precompute_ref_log_probs is not None:
        return bool(module.uses_reference and hp.precompute_ref_log_probs)
    if module.unpaired or hp.ref_sync_steps or (hp.lora_r and hp.ref_model_name_or_path is None):
        return False  # live KL samples, a moving reference, or no second model to free
    if trainer is None or trainer.state.fn != "fit" or trainer.limit_train_batches != 1.0:
        return False
    pairs = getattr(trainer.datamodule, "train_pairs", None)
    if not pairs or getattr(trainer.datamodule, "unpaired", False):
        return False
    if trainer.max_steps < 0:
        return True  # whole epochs
    pairs_per_step = trainer.datamodule.hparams.batch_size * trainer.accumulate_grad_batches * trainer.world_size
    return trainer.max_steps * pairs_per_step >= len(pairs)


def cache_logps(module: Any, stages: list[str]) -> None:
    """Attach reference log-probs to ``module.trainer.datamodule``'s ``{stage}_pairs``, then drop the reference.

    Every rank computes its share of a missing entry (``reference_cache.compute``); rank 0 writes it.
    """
    trainer = module.trainer
    datamodule, strategy = trainer.datamodule, trainer.strategy
    if not hasattr(datamodule, "collator"):
        raise InputError("precompute_ref_log_probs needs lit_dpo's PreferenceDataModule")
    settings = {"dtype": module.hparams.dtype, "precision": str(trainer.precision), "ld_alpha": module.hparams.ld_alpha}
    for stage in stages:
        pairs = getattr(datamodule, f"{stage}_pairs")
        if not pairs or "ref_logps" in pairs[0]:
            continue
        if "completion_ids" in pairs[0]:
            raise InputError(
                "precompute_ref_log_probs does not apply to unpaired (KTO) rows: their KL completions are drawn "
                "from each batch, so the reference runs live"
            )
        key = reference_cache.pairs_fingerprint(pairs, module.ref_weights_fingerprint, settings)
        logps = reference_cache.load(key)
        if not strategy.reduce_boolean_decision(logps is not None, all=True):  # every rank computes, or none
            logps = reference_cache.compute(
                pairs,
                datamodule.collator(),
                lambda batch: module.reference_logps(move_data_to_device(batch, module.device)),
                datamodule.hparams.val_batch_size or 2 * datamodule.hparams.batch_size,
                trainer.global_rank,
                trainer.world_size,
                lambda t: module.all_gather(t) if trainer.world_size > 1 else t[None],
            )
            if trainer.is_global_zero:
                reference_cache.save(key, logps)
        reference_cache.attach(pairs, logps)
    module.reference = None
    gc.collect()


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
