"""Callbacks for tests that inject faults into a real run (loaded by `--trainer.callbacks+=killer.…`)."""

import os
import signal

from lightning.pytorch import Callback


class KillAfterStep(Callback):
    """SIGKILL this process right after a given optimizer step, as a preempted job dies."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class TermAtStep(Callback):
    """Send SIGTERM to this process (on rank 0, as a scheduler's preemption reaches it) while this optimizer step
    is being computed."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            os.kill(os.getpid(), signal.SIGTERM)


class UsrAtStep(TermAtStep):
    """Send SIGUSR1 (SLURM's warning before a preemption or the time limit, ``#SBATCH --signal=SIGUSR1@90``) to
    this process while this optimizer step is being computed."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            os.kill(os.getpid(), signal.SIGUSR1)


class NanGradientAtStep(Callback):
    """Make the gradient of one parameter NaN at a given optimizer step (the loss stays finite)."""

    def __init__(self, step: int, parameter: str = "model.layers.1.mlp.up_proj.weight") -> None:
        self.step, self.parameter = step, parameter

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            param = dict(pl_module.policy.named_parameters())[self.parameter]
            param.register_hook(lambda grad: grad * float("nan"))


class BlockPath(Callback):
    """When training ends, put a file where a path was to be written (as a full disk or another job would)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            with open(self.path, "w") as handle:
                handle.write("in the way")


class DiskFullOnRank0(Callback):
    """When training ends, make rank 0's export fail as a full disk would; the other ranks' writes are untouched."""

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            import lit_dpo.hf

            def disk_full(*args, **kwargs):
                raise OSError(28, "No space left on device")

            lit_dpo.hf.export_hf = disk_full


class RecordSharding(Callback):
    """Write how the policy's first weight is laid out (DTensor mesh shape and placements) to ``path``, on rank 0."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        weight = next(pl_module.policy.parameters())
        if trainer.is_global_zero:
            with open(self.path, "w") as handle:
                handle.write(f"{tuple(weight.device_mesh.shape)} {[str(p) for p in weight.placements]}\n")


class FailFinalValidation(Callback):
    """Raise in the validation at the end of training (an out-of-memory generation, a crashing logger, say)."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if 0 < trainer.max_steps <= trainer.global_step or trainer.current_epoch + 1 >= (trainer.max_epochs or 0):
            raise RuntimeError("the final validation failed")
