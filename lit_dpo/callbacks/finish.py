"""``FinishRun``: what the end of every lit_dpo fit does, as one callback a plain ``L.Trainer`` can add.

``python -m lit_dpo.fit`` adds it; in a notebook, ``L.Trainer(callbacks=[FinishRun()])`` gives the same end: a
last validation when the final step had none, the trained policy exported in Hugging Face format, ``report.png``
and the summary lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from lit_dpo.card import model_card
from lit_dpo.hf import check_export_dir, is_vision_language
from lit_dpo.loggers import MetricsRecorder
from lit_dpo.report import draw_report
from lit_dpo.runs import run_directory

SUMMARY = ("val/loss", "val/rewards/accuracies", "val/rewards/margins")


class FinishRun(Callback):
    """The end of a fit: a last validation, the export, the report and the summary (``--finish.*``).

    At the end of a fit that trained to its end (not on SIGTERM or a crash): validate once more if the last step
    had no validation (``max_steps`` can stop mid-epoch), export the policy (``DPOModule.save_pretrained``), draw
    ``report.png`` and print where everything is.

    Args:
        export_dir: Where the trained policy goes in HF format (default: ``<run dir>/hf_model``).
        report: Draw ``report.png`` in the run directory from the logged metrics.
    """

    def __init__(self, export_dir: Optional[str] = None, report: bool = True) -> None:
        if export_dir:
            check_export_dir(Path(export_dir))  # before hours of training (and before the run folder is made)
        self.export_dir = export_dir
        self.report = report
        self.last_validated_step = -1
        self.finished = False
        self.recorder = MetricsRecorder()  # what the report is drawn from when no metrics.csv is written
        self.pairs_before = 0  # the training pairs (padding copies left out) of the run this one resumed
        self.pairs_here = 0  # this rank's since
        self.strategy: Any = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.strategy = trainer.strategy
        if stage == "fit":
            self.finished = False
            if trainer.loggers and self.recorder not in trainer.loggers:  # last: the run's own logger stays first
                trainer.loggers = [*trainer.loggers, self.recorder]

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        self.pairs_here += int((batch.weights > 0).sum())

    def pairs_seen(self) -> int:
        """The run's training pairs so far, over every rank: a collective, so call it on every rank."""
        here = torch.tensor(float(self.pairs_here), device=self.strategy.root_device)
        return self.pairs_before + int(self.strategy.reduce(here, reduce_op="sum"))

    def state_dict(self) -> dict[str, Any]:
        # Lightning makes a checkpoint's contents on every rank (trainer.save_checkpoint), so the ranks sum here
        return {"pairs_seen": self.pairs_seen() if self.strategy is not None else self.pairs_before}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pairs_before, self.pairs_here = state_dict.get("pairs_seen", 0), 0

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.last_validated_step = trainer.global_step

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.last_validated_step != trainer.global_step:
            _validate_in_fit(trainer)  # a no-op without validation data
        self._finish(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.finished:  # no training batch at all (an online round without pairs): Lightning skipped training
            trainer.validate(pl_module, datamodule=trainer.datamodule, verbose=False)
            self._finish(trainer, pl_module)

    def _finish(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.finished = True
        export_dir = Path(self.export_dir or run_directory(trainer) / "hf_model")  # a W&B run's folder exists by now
        for logger in trainer.loggers:
            logger.save()  # the report reads what was logged
        drawn = _draw(trainer, self.recorder) if self.report else None  # before the export: the card shows it
        pairs = self.pairs_seen()
        card = model_card(pl_module, trainer, pairs) if trainer.is_global_zero else None
        # every rank: gathering sharded weights, and agreeing it was written
        pl_module.save_pretrained(export_dir, card=card)
        _summary(trainer, export_dir, drawn)


def _validate_in_fit(trainer: Trainer) -> None:
    """Run the fit's own validation loop now, as Lightning does at an epoch's end: the metrics are logged at the
    final step, by the loggers and callbacks of the fit."""
    trainer.validating = True
    trainer.fit_loop.epoch_loop.val_loop.run()
    trainer.training = True


@rank_zero_only
def _draw(trainer: Trainer, recorder: MetricsRecorder) -> Optional[Path]:
    try:
        return draw_report(run_directory(trainer), series=recorder.series)
    except Exception as err:  # a plot must not turn a finished run into a failure
        print(f"lit_dpo: report         not drawn ({type(err).__name__}: {err})")
        return None


@rank_zero_only
def _summary(trainer: Trainer, export_dir: Path, drawn: Optional[Path]) -> None:
    final: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    values = ", ".join(f"{k}={final[k]:.4f}" for k in SUMMARY if k in final)
    directory = run_directory(trainer)
    print(f"\nlit_dpo: {trainer.global_step} steps; {values}")
    print(f"lit_dpo: run directory  {directory}")
    csv_file = directory / "metrics.csv"
    print(f"lit_dpo: metrics        {csv_file if csv_file.exists() else type(trainer.logger).__name__}")
    reader = "AutoModelForImageTextToText" if is_vision_language(str(export_dir)) else "AutoModelForCausalLM"
    print(f"lit_dpo: trained policy {export_dir}  ({reader}.from_pretrained; README.md: its model card)")
    if drawn is not None:
        redraw = f"  (redraw: python -m lit_dpo.report {directory})" if csv_file.exists() else ""
        print(f"lit_dpo: report         {drawn}{redraw}")
