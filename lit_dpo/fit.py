"""``python -m lit_dpo.fit``: train with DPO, validate at the end, export the policy in Hugging Face format.

A thin shell over the library: ``DPOCLI`` builds ``DPOModule``, the data module and a Trainer with lit_dpo's
callbacks (``FinishRun`` does the end of the run) from the options; this adds the exit status of a preempted run.
"""

from __future__ import annotations

from typing import Optional

from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_dpo.checkpoints import QuietSigterm, ResumableCheckpoint, requeue
from lit_dpo.cli import DPOCLI, say, user_errors


def main(args: Optional[list[str]] = None) -> None:
    with user_errors():
        cli = DPOCLI(args)  # its FinishRun callback validates, exports and reports at the end of the fit
        try:
            cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
        except SIGTERMException:  # preempted: the checkpoint of this step is saved (ResumableCheckpoint)
            _stopped(cli)
            raise SystemExit(143) from None  # 128 + SIGTERM, as a process killed by it would report


@rank_zero_only
def _stopped(cli: DPOCLI) -> None:
    checkpoint = cli.trainer.checkpoint_callback
    saved = checkpoint.last_model_path if isinstance(checkpoint, ResumableCheckpoint) else ""
    where = f"checkpoint {saved}" if saved else "no checkpoint (checkpointing is off)"
    signals = cli.trainer._signal_connector
    if isinstance(signals, QuietSigterm) and signals.requeue_requested:  # SLURM's warning: save, requeue, exit
        job = requeue()
        say(f"\nlit_dpo: stopped by SIGUSR1 at step {cli.trainer.global_step}; {where}; requeued SLURM job {job}, "
            "which resumes with --ckpt_path=auto")  # fmt: skip
        return
    say(f"\nlit_dpo: stopped by SIGTERM at step {cli.trainer.global_step}; {where}; continue with --ckpt_path=last")


if __name__ == "__main__":
    main()
