"""What the terminal shows: the numbers a DPO user watches, a short model summary, and no third-party noise."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count
from rich import get_console
from rich.table import Table

# progress-bar label -> logged metric
SHOWN = {
    "loss": "train/loss",
    "margin": "train/rewards/margins",
    "acc": "train/rewards/accuracies",
    "val_loss": "val/loss",
    "val_margin": "val/rewards/margins",
    "val_acc": "val/rewards/accuracies",
    "win_rate": "val/win_rate",
}


class DPOProgressBar(RichProgressBar):
    """Rich progress bar showing loss, reward margin and accuracy, train and val (and the win-rate), to 4
    significant digits, instead of Lightning's ``v_num`` and rounded ``loss``."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        metrics = trainer.callback_metrics
        return {label: f"{float(metrics[key]):.4g}" for label, key in SHOWN.items() if key in metrics}


class DPOModelSummary(RichModelSummary):
    """The model summary without Lightning's FLOPs column and total (always 0 before a forward has run)."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int, **kwargs: Any) -> None:  # fmt: skip
        columns = dict(summary_data)
        table = Table(header_style="bold magenta")
        for name in ("Name", "Type", "Params", "Mode"):
            table.add_column(name, justify="right" if name == "Params" else "left")
        for row in zip(*(columns[name] for name in ("Name", "Type", "Params", "Mode"))):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        console.print(f"[bold]Trainable params[/]: {get_human_readable_count(trainable_parameters)}   "
                      f"[bold]Total params[/]: {get_human_readable_count(total_parameters)}   "
                      f"[bold]Size[/]: {model_size:,.1f} MB")  # fmt: skip


class _DropTips(logging.Filter):
    # Lightning's adverts, and its note that our model summary replaces its own
    NOISE = ("💡 Tip", "Trainer already configured with model summary")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def quiet_third_party_noise() -> None:
    """Silence what third-party packages print that is known to be harmless here (never lit_dpo's own warnings):
    Lightning's adverts for its cloud packages and notes on its defaults, and deprecations inside torchdata,
    Lightning and PEFT."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r".*set_vital.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated")  # PEFT, adding adapters
