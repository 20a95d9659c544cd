"""``RunLock``: one fit at a time writes into a run directory. Two jobs sharing a root (or one started twice) would
otherwise interleave their checkpoints, metrics and export."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from lightning.pytorch import Callback, LightningModule, Trainer

from lit_dpo.errors import InputError
from lit_dpo.runs import run_directory

LOCK = ".lit_dpo.lock"


class RunLock(Callback):
    """Holds ``<run dir>/.lit_dpo.lock`` (host, pid, start time) while a fit writes there. A lock left by a process
    of this host that no longer runs is stale and taken over; a live one, or one from another host (whose processes
    cannot be checked from here), stops the fit with one line saying who holds it."""

    def __init__(self) -> None:
        self.path: Optional[Path] = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after a resumed checkpoint is restored and checked (a refused resume leaves the run directory untouched),
        # before the run writes anything there
        if trainer.logger is None:
            return
        problem = None
        if trainer.is_global_zero:
            try:
                self.path = acquire(run_directory(trainer) / LOCK)
            except InputError as err:
                problem = str(err)
        if trainer.world_size > 1:
            problem = trainer.strategy.broadcast(problem, src=0)  # every rank stops, none waits on rank 0
        if problem is not None:
            raise InputError(problem)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.release()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.release()

    def release(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def acquire(path: Path) -> Path:
    """Create the lock file ``path`` for this process, taking over a stale one; ``InputError`` if it is held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            with open(path, "x") as handle:  # O_EXCL: of two processes starting together, one wins
                json.dump(holder, handle)
            return path
        except FileExistsError:
            other = _holder(path)
            if other is not None and not _stale(other):
                raise InputError(
                    f"{path.parent} is in use by another fit (pid {other.get('pid')} on {other.get('host')}, since "
                    f"{other.get('since')}); give this run its own --trainer.default_root_dir, or remove {path} if "
                    "that fit is gone"
                ) from None
            path.unlink(missing_ok=True)  # stale (or unreadable, half-written by a killed process): taken over
    raise InputError(f"could not take the lock {path}")


def _holder(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _stale(holder: dict) -> bool:
    """Whether the lock's process is gone: only knowable for a process of this host."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False
