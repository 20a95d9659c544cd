"""Where a run keeps its files: the logger's version folder (``runs/lightning_logs/version_N`` by default)."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer


def run_directory(trainer: Trainer) -> Path:
    """The run's directory, holding config, metrics, checkpoints, generations, report and export."""
    logger = trainer.logger
    if logger is None:
        return Path(trainer.default_root_dir)
    if getattr(logger, "log_dir", None):  # CSV, TensorBoard
        return Path(logger.log_dir)
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / str(logger.version)  # W&B
