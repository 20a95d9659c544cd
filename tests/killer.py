"""A callback for tests: SIGKILL this process right after a given optimizer step, as a preempted job dies."""

import os
import signal

from lightning.pytorch import Callback


class KillAfterStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
