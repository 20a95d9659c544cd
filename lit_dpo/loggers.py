"""Loggers: the default CSV logger, made to continue a run on resume instead of deleting its metrics; and an
in-memory recorder of what a run logged, for its report whatever the logger."""

from __future__ import annotations

import csv
import os
from typing import Any, Optional

from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``; with ``resume_step`` it continues the run's ``metrics.csv``, keeping the rows
    logged before that step and dropping those the interrupted run logged after its checkpoint (they are redone).

    Lightning's own writer deletes an existing ``metrics.csv`` as soon as it is created, before the run has even
    checked its checkpoint; this one leaves the file alone until the resumed run saves its first rows.
    """

    def __init__(self, *args: Any, resume_step: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self._resume_step is not None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, self._resume_step)
        return super().experiment


class MetricsRecorder(Logger):
    """Keeps every logged metric in memory as ``(step, value)`` points (``series``), whatever the run's own
    loggers are: what ``report.png`` is drawn from when the run writes no ``metrics.csv`` (W&B, TensorBoard)."""

    def __init__(self) -> None:
        super().__init__()
        self.series: dict[str, list[tuple[int, float]]] = {}

    @property
    def name(self) -> str:
        return "metrics_recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        for key, value in metrics.items():
            if key != "epoch":
                self.series.setdefault(key, []).append((int(step or 0), float(value)))


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int) -> None:
        self._resume_step: Optional[int] = resume_step
        # the run's recorded hparams.yaml stays as it was; the resumed run's go beside it
        self.NAME_HPARAMS_FILE = f"hparams_resumed_at_step_{resume_step}.yaml"
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        pass  # keep the metrics of the run being continued

    def save(self) -> None:
        if self._resume_step is not None and self.metrics:  # the first save: trim, then append as usual
            header, rows = _rows_before(self.metrics_file_path, self._resume_step)
            self._resume_step = None
            if rows:
                self.metrics_keys = header
                with open(self.metrics_file_path, "w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=header)
                    writer.writeheader()
                    writer.writerows(rows)
            elif os.path.isfile(self.metrics_file_path):
                os.remove(self.metrics_file_path)
        super().save()


def _rows_before(path: str, step: int) -> tuple[list[str], list[dict[str, str]]]:
    if not os.path.isfile(path):
        return [], []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if int(row["step"]) < step]
        return list(reader.fieldnames or []), rows
