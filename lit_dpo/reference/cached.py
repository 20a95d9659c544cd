"""Cached reference log-probs: one pass of the frozen reference before training, stored on disk and reused, in
place of the model (``CachedReference``).

The cache key is a SHA-256 of everything the reference log-probs depend on: the reference's weights, the
token ids of every pair (so the data file's contents, the tokenizer, the chat template, the length limits and
the truncation rule all count, through what they produce), the dtype and the precision. Any change is a new
file, never a stale hit. Files live under ``$LIT_DPO_CACHE/ref_logps`` (see ``lit_dpo.hf.cache_dir``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import transformers
from filelock import FileLock
from lightning.pytorch.utilities import rank_zero_warn
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from lit_dpo.data.collate import Batch
from lit_dpo.data.protocol import PreferenceData
from lit_dpo.data.tokenize import Pair
from lit_dpo.errors import WRITE_ERRORS, InputError
from lit_dpo.hf import cache_dir, private_dir
from lit_dpo.reference.live import Reference

_FORMAT = "lit_dpo-ref-logps-1"  # bump when what is stored changes meaning


class CachedReference(Reference):
    """Reference log-probs looked up by example ``index``: a ``(N, 2)`` table (chosen, rejected) of the stages
    computed so far (NaN elsewhere)."""

    def __init__(self, table: Tensor, stages: set[str]) -> None:
        self.table, self.stages = table, stages

    def logps(self, batch: Batch) -> Tensor:
        self.table = self.table.to(batch.indices.device)  # once: a few bytes per pair
        return self.table[batch.indices].T.reshape(-1)  # (2B,): chosen, then rejected


def should_cache(
    wanted: Optional[bool], needs_reference: bool, separate_model: bool, unpaired: bool, syncs: bool, trainer: Any,
    data: Optional[PreferenceData],
) -> bool:  # fmt: skip
    """Whether a run uses cached reference log-probs: ``wanted`` (``precompute_ref_log_probs``), or when None,
    for a fit that trains on every pair at least once (the pass then adds no compute) with a ``separate_model``
    as a fixed reference on paired rows (the one case where it frees memory)."""
    if not needs_reference or wanted is not None:
        return bool(needs_reference and wanted)
    if unpaired or syncs or not separate_model:
        return False  # live KL samples, a moving reference, or no second model to free
    if trainer is None or data is None or trainer.state.fn != "fit" or trainer.limit_train_batches != 1.0:
        return False
    if not data.train_examples or data.unpaired:
        return False
    if trainer.max_steps < 0:
        return True  # whole epochs
    pairs_per_step = data.batch_size * trainer.accumulate_grad_batches * trainer.world_size
    return trainer.max_steps * pairs_per_step >= len(data.train_examples)


def cache_logps(
    reference: Reference, stages: dict[str, list[Pair]], collate: Callable[[list[Pair]], Batch], batch_size: int,
    trainer: Any, settings: dict[str, Any],
) -> CachedReference:  # fmt: skip
    """A ``CachedReference`` for the examples of each stage (``{"train": [...], "val": [...]}``): from disk, or one
    pass of the live ``reference`` (each rank computing its share of batches of ``batch_size``, rank 0 writing the
    file), which the caller can then free. ``reference`` may be a ``CachedReference`` already, for stages it holds."""
    cached = reference if isinstance(reference, CachedReference) else None
    if cached is None:
        size = max((ex.index + 1 for examples in stages.values() for ex in examples), default=0)
        cached = CachedReference(torch.full((size, 2), float("nan")), set())
    for stage, examples in stages.items():
        if not examples or stage in cached.stages:
            continue
        if reference is cached:
            raise RuntimeError(f"no live reference left to compute the {stage} log-probs")
        key = pairs_fingerprint(examples, reference.fingerprint, settings | _model_settings(reference))
        logps = load(key, len(examples))
        if not trainer.strategy.reduce_boolean_decision(logps is not None, all=True):  # every rank, or none
            logps = _compute_on_ranks(reference, examples, collate, batch_size, trainer)
            if trainer.is_global_zero:
                save(key, logps)
        cached.table[torch.tensor([ex.index for ex in examples])] = logps.to(cached.table)
        cached.stages.add(stage)
    return cached


def cache_stages(
    reference: Reference, data: Optional[PreferenceData], stages: Sequence[str], trainer: Any, settings: dict[str, Any]
) -> CachedReference:
    """``cache_logps`` for the data module's examples of ``stages`` (train, val), in its batches."""
    if data is None:
        raise InputError("precompute_ref_log_probs needs lit_dpo's PreferenceDataModule")
    if data.unpaired:
        raise InputError("precompute_ref_log_probs does not apply to unpaired (KTO) rows: their KL completions "
                         "are drawn from each batch, so the reference runs live")  # fmt: skip
    if "train" in stages and not data.train_examples:
        raise InputError(
            "precompute_ref_log_probs needs the training pairs before training starts; streamed data "
            "(--data.streaming=true) is read as training goes: leave it unset (the reference runs live)"
        )
    examples = {"train": data.train_examples, "val": data.val_examples}
    chosen = {stage: examples[stage] for stage in stages}
    return cache_logps(reference, chosen, data.collator(), data.val_batch_size, trainer, settings)


def _model_settings(reference: Reference) -> dict[str, Any]:
    """What the log-probs depend on besides the weights and the token ids: the model's configuration (RoPE,
    sliding windows, softcapping, ...), its attention implementation, and the library versions computing them."""
    model = reference.model if reference.model is not None else getattr(reference, "policy", None)
    config = getattr(model, "config", None)
    return {
        "config": hashlib.sha256(config.to_json_string().encode()).hexdigest() if config is not None else None,
        "attention": getattr(config, "_attn_implementation", None),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _compute_on_ranks(
    reference: Reference, examples: list[Pair], collate: Callable[[list[Pair]], Batch], batch_size: int, trainer: Any
) -> Tensor:
    device, strategy = trainer.lightning_module.device, trainer.strategy

    def batch_logps(batch: Batch) -> Tensor:
        with trainer.precision_plugin.forward_context():  # outside a step: the run's precision, set here
            return reference.logps(batch.to(device))

    gather = strategy.all_gather if trainer.world_size > 1 else (lambda t: t[None])
    return compute(
        examples, collate, batch_logps, batch_size, trainer.global_rank,
        trainer.world_size, gather,
    )  # fmt: skip


def weights_fingerprint(state_dict: dict[str, Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a model's tensors."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pairs_fingerprint(pairs: Sequence[Pair], weights: Optional[str], settings: dict[str, Any]) -> str:
    """Key of one set of pairs (train or val) under a reference with ``weights`` fingerprint and ``settings``."""
    digest = hashlib.sha256(json.dumps({"format": _FORMAT, "weights": weights, **settings}, sort_keys=True).encode())
    for pair in pairs:
        digest.update(json.dumps([pair.prompt_ids, pair.chosen_ids, pair.rejected_ids]).encode())
    return digest.hexdigest()


def _path(fingerprint: str) -> Path:
    return cache_dir() / "ref_logps" / f"{fingerprint}.safetensors"


def load(fingerprint: str, rows: int) -> Optional[Tensor]:
    """The stored ``(rows, 2)`` log-probs (chosen, rejected) for this key, or None: none stored, or a file that does
    not hold what its name promises (truncated, edited, another data set), which is then deleted with a warning."""
    path = _path(fingerprint)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            metadata, logps = handle.metadata() or {}, handle.get_tensor("logps")
        problem = _problem(metadata, logps, fingerprint, rows)
    except Exception as err:  # safetensors raises several types for a damaged file
        problem = f"it cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    if problem is None:
        return logps
    rank_zero_warn(f"reference log-prob cache {path}: {problem}; computing it again")
    path.unlink(missing_ok=True)
    return None


def _problem(metadata: dict[str, str], logps: Tensor, fingerprint: str, rows: int) -> Optional[str]:
    if metadata.get("format") != _FORMAT or metadata.get("key") != fingerprint:
        return "its key or format is not the one it is named after"
    if tuple(logps.shape) != (rows, 2) or metadata.get("rows") != str(rows):
        return f"it holds {tuple(logps.shape)} values where {rows} pairs need ({rows}, 2)"
    if not bool(torch.isfinite(logps).all()):
        return "it holds values that are not finite"
    return None


def save(fingerprint: str, logps: Tensor) -> None:
    """Store the log-probs under their key: written whole (fsync, then rename) or not at all. The cache is an
    optimisation: a failed write (disk full, permissions) warns and training goes on."""
    try:
        path = _path(fingerprint)
        private_dir(path.parent)
        with FileLock(str(path) + ".lock"):
            partial = path.with_name(path.name + ".partial")
            metadata = {"format": _FORMAT, "key": fingerprint, "rows": str(logps.shape[0])}
            save_file({"logps": logps.contiguous()}, str(partial), metadata=metadata)
            with open(partial, "rb") as handle:
                os.fsync(handle.fileno())
            partial.rename(path)  # readers never see half a file
    except WRITE_ERRORS as err:  # a full disk: OSError, or safetensors' own error
        rank_zero_warn(f"could not save the reference log-prob cache ({err}); training goes on without it")


def compute(
    pairs: Sequence[Any],
    collate: Callable[[list[Any]], Any],
    batch_logps: Callable[[Any], Tensor],
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    gather: Callable[[Tensor], Tensor] = lambda t: t[None],
) -> Tensor:
    """Reference log-probs ``(N, 2)`` of ``pairs``, each rank computing every ``world_size``-th pair.

    ``batch_logps(batch)`` returns a batch's ``(2B,)`` summed completion log-probs, chosen first;
    ``gather`` stacks a tensor from every rank, ``(world_size, ...)``. Every rank runs the same number of
    batches (the share is padded with repeats), as sharded models need.
    """
    share = -(-len(pairs) // world_size)  # pairs per rank, rounded up
    mine = [pairs[min(rank + world_size * j, len(pairs) - 1)] for j in range(share)]
    out = []
    for start in range(0, share, batch_size):
        logps = batch_logps(collate(mine[start : start + batch_size]))  # (2B,)
        out.append(torch.stack(logps.float().chunk(2), dim=1))  # (B, 2)
    gathered = gather(torch.cat(out))  # (world_size, share, 2)
    # pair rank + world_size * j was computed by rank `rank` as its j-th
    return gathered.transpose(0, 1).reshape(-1, 2)[: len(pairs)].cpu()
