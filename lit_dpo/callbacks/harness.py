"""``EvalHarness``: what DPO cost in general ability. lm-evaluation-harness tasks run on the model before the first
update (the reference: DPO's starting point) and on the trained policy at the end of the fit; the scores and their
delta are logged as ``eval/{reference,policy,delta}/<task>/<metric>``, shown as a table, and go into the model card.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from lit_dpo import harness
from lit_dpo.data.protocol import preference_data
from lit_dpo.errors import InputError


class EvalHarness(Callback):
    """General-ability tasks before and after DPO (``--eval_harness.*``; ``pip install 'lit_dpo[eval]'``).

    Put it before ``FinishRun`` in a plain ``L.Trainer``'s callbacks: the model card shows the table.

    Args:
        tasks: lm-evaluation-harness task names (``lit_dpo_arithmetic``: lit_dpo's offline task). None: off.
        limit: At most this many examples per task (None: all).
        num_fewshot: Examples shown before each question (None: the task's default).
        batch_size: Requests scored together.
    """

    def __init__(
        self,
        tasks: Optional[list[str]] = None,
        limit: Optional[int] = None,
        num_fewshot: Optional[int] = None,
        batch_size: int = 8,
    ) -> None:
        self.tasks = list(tasks or [])
        self.limit, self.num_fewshot, self.batch_size = limit, num_fewshot, batch_size
        self.manager: Any = None
        self.reference: Optional[harness.Scores] = None  # kept in checkpoints: the resumed policy is no reference
        self.policy: Optional[harness.Scores] = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.tasks and self.manager is None:  # unknown tasks and a missing extra fail before any training
            self.manager = harness.task_manager(self.tasks)
            harness.check_tasks(self.tasks, self.manager)

    def state_dict(self) -> dict[str, Any]:
        return {"reference": self.reference}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reference = state_dict.get("reference")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.tasks or self.reference is not None:
            return
        if trainer.global_step > 0:  # resumed from a checkpoint saved without these scores: no starting point
            raise InputError(
                "--eval_harness.tasks: the checkpoint was saved without the reference's scores (the fit that wrote "
                "it had no --eval_harness.tasks); compare afterwards with python -m lit_dpo.eval EXPORT_DIR "
                "--reference=MODEL"
            )
        self.reference = self._evaluate(trainer, pl_module)  # before the first update: the model DPO starts from
        self._log(trainer, harness.logged(self.reference, None))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.tasks:
            return
        self.policy = self._evaluate(trainer, pl_module)
        scores = harness.logged(self.reference, self.policy)
        self._log(trainer, scores)
        trainer.callback_metrics.update(
            {k: torch.tensor(v, dtype=torch.float64) for k, v in scores.items()}
        )  # the model card reads them
        _show(trainer, scores, self.tasks)

    def _evaluate(self, trainer: Trainer, pl_module: LightningModule) -> harness.Scores:
        """Every rank scores the same requests (a sharded model's forward needs them all); rank 0's scores, which
        lm-evaluation-harness reports, go to every rank."""
        data = preference_data(trainer)
        if data is None:
            raise InputError("EvalHarness needs lit_dpo's data module (its tokenizer)")
        model = pl_module.policy  # type: ignore[attr-defined]  (DPOModule's)
        scores = harness.evaluate(
            model, data.tokenizer, self.tasks, self.manager, self.limit, self.batch_size, self.num_fewshot
        )
        return trainer.strategy.broadcast(scores, src=0)

    @rank_zero_only
    def _log(self, trainer: Trainer, scores: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(scores, step=trainer.global_step)
            if isinstance(logger, WandbLogger) and any(k.startswith("eval/delta/") for k in scores):
                found = harness.rows(scores)
                logger.log_table("eval/general_ability", ["task", "metric", *harness.SIDES], [list(r) for r in found])


@rank_zero_only
def _show(trainer: Trainer, scores: dict[str, float], tasks: list[str]) -> None:
    print(f"\nlit_dpo: general ability ({', '.join(tasks)}; lm-evaluation-harness), step {trainer.global_step}")
    print(harness.table(scores))
