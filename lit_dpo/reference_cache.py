"""Cached reference log-probs: one pass of the frozen reference before training, stored on disk and reused.

The cache key is a SHA-256 of everything the reference log-probs depend on: the reference's weights, the
token ids of every pair (so the data file's contents, the tokenizer, the chat template, the length limits and
the truncation rule all count, through what they produce), the dtype and the precision. Any change is a new
file, never a stale hit. Files live under ``$LIT_DPO_CACHE/ref_logps`` (see ``lit_dpo.models.cache_dir``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Optional

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file
from torch import Tensor

from lit_dpo.models import cache_dir

_FORMAT = "lit_dpo-ref-logps-1"  # bump when what is stored changes meaning


def weights_fingerprint(state_dict: dict[str, Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a model's tensors."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pairs_fingerprint(pairs: list[dict[str, Any]], weights: str, settings: dict[str, Any]) -> str:
    """Key of one set of pairs (train or val) under a reference with ``weights`` fingerprint and ``settings``."""
    digest = hashlib.sha256(json.dumps({"format": _FORMAT, "weights": weights, **settings}, sort_keys=True).encode())
    for pair in pairs:
        digest.update(json.dumps([pair["prompt_ids"], pair["chosen_ids"], pair["rejected_ids"]]).encode())
    return digest.hexdigest()


def _path(fingerprint: str):
    return cache_dir() / "ref_logps" / f"{fingerprint}.safetensors"


def load(fingerprint: str) -> Optional[Tensor]:
    """The stored ``(N, 2)`` log-probs (chosen, rejected) for this key, or None."""
    path = _path(fingerprint)
    return load_file(str(path))["logps"] if path.exists() else None


def save(fingerprint: str, logps: Tensor) -> None:
    path = _path(fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        partial = path.with_name(path.name + ".partial")
        save_file({"logps": logps.contiguous()}, str(partial))
        partial.rename(path)  # readers never see half a file


def attach(pairs: list[dict[str, Any]], logps: Tensor) -> None:
    """Store each pair's reference log-probs in it; the collators pass them on as ``batch["ref_logps"]``."""
    for pair, (chosen, rejected) in zip(pairs, logps.tolist()):
        pair["ref_logps"] = (chosen, rejected)


def compute(
    pairs: list[dict[str, Any]],
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
    batch_logps: Callable[[dict[str, Any]], Tensor],
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
