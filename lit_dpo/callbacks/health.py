"""Training-health alarms: signs that DPO is gaming its own metrics, as ``health/`` metrics and one warning each.

- Likelihood displacement (arXiv 2410.08847): the policy's log-prob of the *chosen* answers falls below the
  reference's while the margins rise: the model pushes both answers down, the rejected one faster.
- KL growth: the policy drifts far from the reference (``train/kl``, summed log-ratio per completion).
- Reward hacking by length: the policy's generations grow much longer than the reference's (``WinRate``'s
  ``val/gen_length/*``).
(The step-0 check that policy and reference agree is ``lit_dpo.reference.check_start``.)
"""

from __future__ import annotations

from typing import Optional

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from lit_dpo.callbacks.generations import WinRate


class TrainingHealth(Callback):
    """Training-health alarms as ``health/`` metrics, and a warning the first time each sets (``--health.*``).

    Args:
        displacement_nats: Alarm when the policy's mean chosen log-prob is this far below the reference's while
            the margins grow.
        kl_nats: Alarm when ``train/kl`` (per completion) exceeds this.
        length_ratio: Alarm when the policy's generations are this many times as long as the reference's.
    """

    def __init__(self, displacement_nats: float = 5.0, kl_nats: float = 20.0, length_ratio: float = 1.5) -> None:
        self.displacement_nats, self.kl_nats, self.length_ratio = displacement_nats, kl_nats, length_ratio
        self.first_margin: Optional[float] = None
        self.warned: set[str] = set()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        metrics = trainer.callback_metrics
        if "train/ref_logps/chosen" not in metrics or "train/rewards/margins" not in metrics:
            return
        chosen_shift = float(metrics["train/logps/chosen"] - metrics["train/ref_logps/chosen"])
        margin = float(metrics["train/rewards/margins"])
        self.first_margin = margin if self.first_margin is None else self.first_margin
        values = {"health/chosen_logps_shift": chosen_shift, "health/margin_growth": margin - self.first_margin}
        self._alarm(
            "displacement",
            chosen_shift < -self.displacement_nats and margin > self.first_margin,
            f"likelihood displacement at step {trainer.global_step}: the policy's chosen answers are "
            f"{-chosen_shift:.1f} nats less likely than under the reference while the margins grew by "
            f"{margin - self.first_margin:.2f}: the model pushes both answers down (arXiv 2410.08847); consider a "
            f"lower learning rate, a higher --model.beta, or adding sft to --model.loss_type",
        )
        if "train/kl" in metrics:
            kl = float(metrics["train/kl"])
            values["health/kl"] = kl
            self._alarm("kl", kl > self.kl_nats, f"KL from the reference is {kl:.1f} nats per completion at step "
                        f"{trainer.global_step} (alarm at {self.kl_nats}): the policy is drifting; consider a higher "
                        f"--model.beta or a lower learning rate")  # fmt: skip
        pl_module.log_dict(values, on_step=True, on_epoch=False)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        lengths = next((c.last for c in trainer.callbacks if isinstance(c, WinRate) and c.last), None)
        if trainer.sanity_checking or lengths is None:
            return
        ratio = lengths["val/gen_length/policy"] / max(lengths["val/gen_length/reference"], 1.0)
        pl_module.log("health/length_ratio", ratio, on_step=False, on_epoch=True)
        self._alarm("length", ratio > self.length_ratio, f"the policy's generations are {ratio:.1f}x as long as the "
                    f"reference's at step {trainer.global_step}: a sign of reward hacking by length; look at the "
                    f"generations/ folder, or try --model.ld_alpha")  # fmt: skip

    def _alarm(self, name: str, raised: bool, message: str) -> None:
        if raised and name not in self.warned:
            self.warned.add(name)
            rank_zero_warn(message)
