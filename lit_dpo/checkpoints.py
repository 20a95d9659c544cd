"""Checkpoints a cluster user can trust: a resumable ``last`` checkpoint saved periodically, at the end of every
epoch and of training, and when SIGTERM (a preemption) stops the run; written atomically and streamed to disk;
and ``--ckpt_path=last|auto`` resolved to the newest run that has one."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_dpo.atomic import write_atomically
from lit_dpo.errors import WRITE_ERRORS, InputError, SaveFailed, describe
from lit_dpo.resume import differences, listed

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` straight into a temporary file next to the checkpoint, ``fsync``, then rename over it: a kill
    during the save leaves the previous checkpoint whole, and no second copy of the checkpoint is built in memory
    (Lightning's default serialises it into a buffer first). Loads with ``weights_only=True``."""

    failure: Optional[str] = None  # why the last save failed; ResumableCheckpoint makes every rank stop on it

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):  # remote storage: Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:  # not raised here: the ranks waiting in Lightning's barrier after the save must not hang
            write_atomically(Path(path), lambda partial: _save_synced(checkpoint, partial))
            self.failure = None
        except WRITE_ERRORS as err:
            self.failure = f"could not save the checkpoint {path} ({describe(err)})"

    def load_checkpoint(
        self, path: Any, map_location: Optional[Any] = None, weights_only: Optional[bool] = None
    ) -> Any:
        if Path(path).is_dir():  # a distributed checkpoint, which only a sharding strategy reads
            raise InputError(f"{path} is a distributed (FSDP) checkpoint: load it with the strategy that saved it "
                             "(e.g. --config recipes/strategy/fsdp.yaml and the same --trainer.devices)")  # fmt: skip
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


def _save_synced(checkpoint: dict[str, Any], path: Path) -> None:
    with open(path, "wb") as handle:
        torch.save(checkpoint, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _last_epoch(trainer: Trainer) -> bool:
    """Whether the epoch being trained is the fit's last (by ``max_epochs`` or ``max_steps``)."""
    by_steps = 0 < trainer.max_steps <= trainer.global_step
    max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
    return by_steps or 0 < max_epochs <= trainer.current_epoch + 1


def _accumulating(trainer: Trainer) -> bool:
    """Whether the batch that just ended was one of several accumulated into the next optimizer step."""
    should_accumulate = getattr(trainer.fit_loop.epoch_loop, "_should_accumulate", None)
    return bool(should_accumulate()) if should_accumulate is not None else False


class ResumableCheckpoint(ModelCheckpoint):
    """Resumable checkpoints (``--checkpoint.*``): ``last.ckpt`` in the run's ``checkpoints/``.

    Saved every ``every_minutes`` of training (and/or every ``every_n_train_steps``), at the end of every epoch and
    of training, and at the step where SIGTERM (what SLURM and Kubernetes send on preemption) arrives, before the
    run exits with status 143.

    Args:
        every_minutes: Save at the first step after this many minutes of training since the last save (0: never).
        every_n_train_steps: Also save every this many optimizer steps (0: never).
    """

    def __init__(self, every_minutes: float = 30.0, every_n_train_steps: int = 0) -> None:
        super().__init__(save_top_k=0, save_last=True, save_on_train_epoch_end=True)
        self.every_minutes, self.every_steps = every_minutes, every_n_train_steps
        self._last_save = time.monotonic()
        self._stop_at_epoch_end = False
        self._resave_at_epoch_end = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_save = time.monotonic()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self._should_skip_saving_checkpoint(trainer):
            return
        minutes = (time.monotonic() - self._last_save) / 60
        due = bool(self.every_steps and trainer.global_step % self.every_steps == 0)
        due |= bool(self.every_minutes and minutes >= self.every_minutes)
        due |= 0 < trainer.max_steps <= trainer.global_step  # the last step: the end of training
        due &= not _accumulating(trainer)  # mid-accumulation the partial gradients would be lost
        # the clock and the signal are rank 0's, as Lightning decides SIGTERM: every rank saves, or none
        if trainer.world_size > 1:
            due, stopping = trainer.strategy.broadcast((due, trainer.received_sigterm), src=0)
            trainer._signal_connector.received_sigterm = stopping  # every rank stops after this step, together
        else:
            stopping = trainer.received_sigterm
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # the epoch's end, which comes next, saves (after its validation); SIGTERM waits for it
            if stopping:
                trainer._signal_connector.received_sigterm, self._stop_at_epoch_end = False, True
            elif _last_epoch(trainer):  # the end of training: saved before the validation too, which may fail
                self.save_resumable(trainer)
                self._resave_at_epoch_end = True
            return
        if due or stopping:
            self.save_resumable(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            # once validated, the end of training is saved again as the finished epoch it is (what a longer run resumes)
            self.save_resumable(trainer, again=self._resave_at_epoch_end)
            self._resave_at_epoch_end = False
        if self._stop_at_epoch_end:
            raise SIGTERMException  # as Lightning does on SIGTERM: fit.py exits with status 143

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        progress = trainer.fit_loop.epoch_progress.current
        if "loops" in checkpoint and progress.processed > progress.completed:  # saved by an epoch-end hook
            _record_between_epochs(checkpoint["loops"]["fit_loop"], sized=trainer.num_training_batches != float("inf"))
            checkpoint["epoch"] = progress.processed

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        if fit_loop.get("state_dict", {}).pop(_BETWEEN_EPOCHS, False) is True and trainer.max_steps != -1:
            # Lightning, resuming with max_steps, counts a logging step it takes to have been in flight at the save
            # (with a loader of known length; a streamed one's, "unsized", is counted right)
            fit_loop["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pass  # no checkpoint per validation: the triggers above say when

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pass  # the last step was saved at its batch end; a save here would not resume mid-epoch

    def save_resumable(self, trainer: Trainer, again: bool = False) -> None:
        if trainer.global_step == self._last_global_step_saved and not again:
            return
        path = os.path.join(self.dirpath, LAST)
        trainer.save_checkpoint(path, weights_only=False)  # the full training state, to resume
        io = trainer.strategy.checkpoint_io
        failure = io.failure if isinstance(io, AtomicCheckpointIO) else None
        if trainer.world_size > 1:
            failure = trainer.strategy.broadcast(failure, src=0)  # rank 0 wrote it: every rank stops together
        if failure is not None:
            raise SaveFailed(f"{failure}; the previous checkpoint is kept, free some space and resume from it")
        self.last_model_path, self._last_global_step_saved = path, trainer.global_step
        self._last_save = time.monotonic()


_BETWEEN_EPOCHS = "lit_dpo_between_epochs"


def _record_between_epochs(fit_loop: dict[str, Any], sized: bool) -> None:
    """Record a fit loop saved in an epoch's end hooks as the finished epoch it is about to be. Restored as saved,
    Lightning (2.6, with ``max_steps``) runs that epoch's end again, counts it twice and stops an epoch early; and the
    exhausted dataloader's state would leave the next epoch empty. Without it, the resumed run starts the next epoch
    afresh, in the order (seed, epoch) gives it, as the uninterrupted run does."""
    for counts in fit_loop["epoch_progress"].values():
        counts["completed"] = counts["processed"]
    batches = fit_loop["epoch_loop.batch_progress"]
    batches["current"], batches["is_last_batch"] = dict.fromkeys(batches["current"], 0), False
    fit_loop["state_dict"].pop("combined_loader", None)
    fit_loop["state_dict"][_BETWEEN_EPOCHS] = True if sized else "unsized"


class QuietSigterm(_SignalConnector):
    """Lightning's signal handling, whose SIGTERM handler only raises the flag. Lightning's own also broadcasts
    from inside the handler and forwards the signal to the other ranks, whose handlers broadcast too: collectives
    begun at whatever point each rank was interrupted, which can pair with another rank's gradient all-reduce and
    break the run (seen as "Connection reset by peer" on 2 gloo ranks). The ranks agree on rank 0's flag at each
    step's end (``ResumableCheckpoint``) and at the next step's start (Lightning)."""

    requeue_requested = False  # SLURM's SIGUSR1: after the save, fit.py requeues the job (``requeue``)

    def _sigterm_notifier_fn(self, signum: Any, frame: Any) -> None:
        self.received_sigterm = True

    def _slurm_sigusr_handler_fn(self, signum: Any, frame: Any) -> None:
        # Lightning's saves a checkpoint from inside the handler, on every rank: under FSDP a collective begun
        # wherever each rank was interrupted. Handled like SIGTERM instead: raise the flags; the ranks agree at the
        # step's end, save together (ResumableCheckpoint), and fit.py then requeues the job
        self.received_sigterm = self.requeue_requested = True


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles a distributed checkpoint's ``.metadata`` with only the classes torch writes there: its metadata
    dataclasses and enums, dtypes, sizes and paths. Anything else (a crafted file's payload) is refused."""

    _MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
    _NAMES = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
              ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"), ("collections", "OrderedDict")}  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name) if module in self._MODULES or (module, name) in self._NAMES else None
        if found is None and module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            found = getattr(torch, name)
        if module in self._MODULES and not isinstance(found, type):
            found = None  # classes and enums only, never a function of those modules
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a distributed checkpoint's metadata")
        return found


def check_distributed_checkpoint(path: Path) -> None:
    """Refuse a distributed-checkpoint folder whose ``.metadata`` would run code when torch unpickles it: it is read
    here first with only the classes such metadata holds (``_MetadataUnpickler``), so a checkpoint cannot run code."""
    try:
        with open(path / ".metadata", "rb") as handle:
            _MetadataUnpickler(handle).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as err:
        raise InputError(f"{path}: not a distributed checkpoint lit_dpo will load ({err})") from None


def requeue() -> str:
    """Ask SLURM to requeue this job (``scontrol requeue``), as Lightning's SIGUSR1 handler does; the job id said."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ.get("SLURM_JOB_ID", "")
    if not re.fullmatch(r"[0-9_]+", job):
        raise InputError(f"cannot requeue: SLURM_JOB_ID {job!r} is not a job id")
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(f"scontrol requeue {job} failed: {done.stderr.strip() or done.returncode}")
    return job


def resumable_checkpoint(run: Path) -> Optional[Path]:
    """The run's resumable checkpoint: ``checkpoints/last.ckpt`` (a file, or a distributed checkpoint's folder),
    or the previous one when a folder save was interrupted between its two renames."""
    for name in (LAST, LAST + ".old"):
        path = run / "checkpoints" / name
        if path.is_file() or (path / "meta.pt").is_file():
            return path
    return None


def _metadata(path: Path) -> dict[str, Any]:
    """A checkpoint's top-level entries (file, or distributed checkpoint folder's ``meta.pt``), memory-mapped."""
    meta = path / "meta.pt" if path.is_dir() else path
    return torch.load(meta, map_location="cpu", weights_only=True, mmap=True)


def checkpoint_step(path: Path) -> int:
    """The global step a checkpoint (file, or distributed checkpoint folder) was saved at."""
    return int(_metadata(path)["global_step"])


def resumable_checkpoints(root: Path) -> list[tuple[Path, Path]]:
    """``(run directory, its resumable checkpoint)`` for every run under ``root``, the newest checkpoint last."""
    runs = [
        c.parent for pattern in ("*/checkpoints", "*/*/checkpoints", "*/*/*/checkpoints") for c in root.glob(pattern)
    ]
    found = [(run, path) for run in runs if (path := resumable_checkpoint(run)) is not None]
    return sorted(found, key=lambda item: item[1].stat().st_mtime_ns)


def find_resumable(
    root: Path, mode: str, wanted: Optional[dict[str, Any]] = None, allowed: frozenset[str] = frozenset()
) -> tuple[Optional[Path], Optional[str]]:
    """``--ckpt_path=last|auto``: the run directory and checkpoint to resume, the newest resumable one under
    ``root`` (a run's ``checkpoints/last.ckpt``, or Lightning's SLURM ``hpc_ckpt_*.ckpt`` if it has more steps)
    whose recorded settings match ``wanted`` (``resume.settings_from_config``; but the ``allowed`` ones): another
    job's run under the same root is never continued."""
    found = resumable_checkpoints(root)
    if wanted is not None and found:
        changes = {path: differences(recorded_settings(path), wanted, set(allowed)) for _, path in found}
        if all(changes.values()):
            newest = found[-1][1]
            line = (
                f"no run under {root} was saved with these settings (the newest, {newest}: {listed(changes[newest])})"
            )
            if mode == "last":
                names = ", ".join(changes[newest])
                raise InputError(f"--ckpt_path=last: {line}; resume with its settings, or pass "
                                 f"--allow_changed='[{names}]' to resume it anyway")  # fmt: skip
            _announce(f"lit_dpo: {line}; starting afresh")
        found = [(run, path) for run, path in found if not changes[path]]
    best = found[-1] if found else None
    for hpc in root.glob("hpc_ckpt_*.ckpt"):  # SLURM requeue: in the newest run directory
        newest_run = (
            best[0] if best else max((c for c in root.glob("lightning_logs/version_*")), default=None, key=_mtime)
        )
        if newest_run is not None and (best is None or checkpoint_step(hpc) > checkpoint_step(best[1])):
            best = (newest_run, hpc)
    if best is None:
        if mode == "last":
            raise InputError(f"--ckpt_path=last: no run under {root} has a resumable checkpoint (checkpoints/{LAST})")
        return None, None  # auto: a fresh start
    _announce(f"lit_dpo: resuming {best[1]} at step {checkpoint_step(best[1])}")
    return best[0], str(best[1])


def recorded_settings(path: Path) -> dict[str, Any]:
    """The settings a checkpoint (file, or distributed checkpoint folder) was saved with; {} for older ones."""
    return (_metadata(path).get("lit_dpo") or {}).get("settings") or {}


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


@rank_zero_only
def _announce(line: str) -> None:
    print(line, flush=True)
