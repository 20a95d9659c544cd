"""FSDP2 for lit_dpo: sharding the policy and reference per decoder layer, and gathering a full state dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor

from lit_dpo.atomic import fresh_partial, mark, put_in_place
from lit_dpo.checkpoints import check_distributed_checkpoint


def is_sharded(model: torch.nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in model.parameters())


def shard(model: torch.nn.Module, mesh: DeviceMesh) -> None:
    """``fully_shard`` each decoder layer (the classes HF lists in ``_no_split_modules``), then the whole model.

    Each layer is gathered only for its own forward and backward, so a rank holds 1/N of the weights plus one
    layer; the root unit covers what is left (embeddings, final norm, LM head).
    """
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def shard_over(strategy: Any, device_mesh: DeviceMesh, *models: Optional[torch.nn.Module]) -> None:
    """``shard`` each model not yet sharded over the strategy's sharding mesh: HSDP's shard dimension
    (``FSDPStrategy.sharding_mesh``), else Lightning's ``data_parallel`` dimension."""
    mesh = strategy.sharding_mesh if isinstance(strategy, FSDPStrategy) else device_mesh["data_parallel"]
    for model in models:
        if model is not None and not is_sharded(model):
            shard(model, mesh)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's decoder layers: the modules of the classes HF lists in ``_no_split_modules``, its own and its
    sub-models' (a vision-language model's language model lists its decoder layer, its vision encoder its own)."""
    layer_types = {name for m in model.modules() for name in getattr(m, "_no_split_modules", None) or []}
    layers = [m for m in model.modules() if type(m).__name__ in layer_types]
    if not layers:
        raise ValueError(f"{type(model).__name__} names no decoder layer class in _no_split_modules")
    return layers


def compile_layers(*models: Optional[torch.nn.Module]) -> bool:
    """``torch.compile`` each decoder layer of the models (None: skipped), with dynamic sequence lengths: the layers
    share one compiled graph, and the forward around them (masks, the LM head on the scored positions only) stays
    as it is. Returns True."""
    for model in models:
        for layer in decoder_layers(model) if model is not None else []:
            layer.compile(dynamic=True)
    return True


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on the CPU when sharded (a collective: call it on every rank); else ``None``."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class FSDPStrategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` with every process data-parallel: FSDP2 over the whole world.

    (Its own ``"auto"`` sizes mean one data-parallel group per node and tensor parallelism inside it.)
    ``DPOModule.configure_model`` shards policy and reference over ``sharding_mesh``.

    Args:
        hsdp: Hybrid sharding (HSDP): shard the weights within each node and replicate them across nodes, so the
            weight gathers of every layer stay on the node's fast links and only gradients cross nodes. Off: shard
            over every process of every node.
        save_distributed_checkpoint: Save a folder of shards per checkpoint (off: one gathered file).
    """

    def __init__(self, hsdp: bool = False, save_distributed_checkpoint: bool = True, **kwargs: Any) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            **kwargs,
        )
        self.hsdp = hsdp
        self._sharding_mesh: Optional[DeviceMesh] = None

    def setup_environment(self) -> None:
        self._data_parallel_size = self.world_size
        super().setup_environment()
        if self.hsdp:  # (nodes, processes per node): FSDP2 replicates over the first dimension, shards over the second
            from torch.distributed.device_mesh import init_device_mesh

            shape = (self.num_nodes, self.world_size // self.num_nodes)
            self._sharding_mesh = init_device_mesh(self.root_device.type, shape, mesh_dim_names=("replicate", "shard"))

    @property
    def sharding_mesh(self) -> DeviceMesh:
        """The mesh the models are sharded over: every process, or (HSDP) nodes x processes per node."""
        return self._sharding_mesh if self._sharding_mesh is not None else self.device_mesh["data_parallel"]

    def load_checkpoint(self, checkpoint_path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if Path(checkpoint_path).is_dir():  # torch unpickles its .metadata: checked with a restricted unpickler first
            check_distributed_checkpoint(Path(checkpoint_path))
        return super().load_checkpoint(checkpoint_path, *args, **kwargs)

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Optional[Any] = None) -> None:
        """Distributed checkpoints (a folder of shards) written into ``<path>.partial`` by every rank, then put in
        place by rank 0: a kill during the save leaves the previous checkpoint whole."""
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)  # one file: AtomicCheckpointIO
        path = Path(self.broadcast(str(filepath)))
        partial = fresh_partial(path) if self.is_global_zero else path.with_name(path.name + ".partial")
        self.barrier()
        super().save_checkpoint(checkpoint, partial, storage_options)
        self.barrier()
        if self.is_global_zero:
            mark(partial)
            put_in_place(path)
        self.barrier()


def gather_in_order(trainer: Any, items: list[Any]) -> list[Any]:
    """Every rank's items, in prompt order (rank r holds prompts r, r + world size, ...)."""
    if trainer.world_size == 1:
        return items
    shares: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(shares, items)
    return [share[i] for i in range(max(map(len, shares))) for share in shares if i < len(share)]


def first_failure(trainer: Any, failure: Optional[str]) -> Optional[str]:
    """Every rank learns whether user code (a judge) failed on any rank: the first failure, or None. A collective:
    called on every rank, so that no rank goes on to wait in a gather that a failed rank never joins."""
    failures = gather_in_order(trainer, [failure] if failure is not None else [])
    return failures[0] if failures else None
