"""Where a run keeps its files: the logger's version folder (``runs/lightning_logs/version_N`` by default)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer


def run_directory(trainer: Trainer) -> Path:
    """The run's directory, holding config, metrics, checkpoints, generations, report and export."""
    logger = trainer.logger
    if logger is None:
        return Path(trainer.default_root_dir)
    if getattr(logger, "log_dir", None):  # CSV, TensorBoard
        return Path(logger.log_dir)
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / str(logger.version)  # W&B


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """``records`` as JSON lines in the run file ``path`` (on the rank that writes them). These files record what
    happened; what training needs is in the checkpoint, so a failed write (a full disk) warns and training goes on."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    except OSError as err:
        warnings.warn(f"could not write {path} ({err}); training goes on without it")
