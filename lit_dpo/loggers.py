"""The default CSV logger, made to continue a run on resume instead of deleting its metrics."""

from __future__ import annotations

import csv
import os
from typing import Any, Optional

from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``; with ``resume_step`` it keeps the rows of ``metrics.csv`` logged before that step.

    Lightning's own writer deletes an existing ``metrics.csv``; a run resumed from a checkpoint at step N keeps the
    history up to N and drops what the interrupted run logged after its last checkpoint (it is redone).
    """

    def __init__(self, *args: Any, resume_step: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            kept = _rows_before(os.path.join(self.log_dir, _ExperimentWriter.NAME_METRICS_FILE), self._resume_step)
            super().experiment  # noqa: B018 - creates the writer, which removes the old file
            if kept:
                header, rows = kept
                self._experiment.metrics_keys = header
                with open(self._experiment.metrics_file_path, "w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=header)
                    writer.writeheader()
                    writer.writerows(rows)
        return self._experiment


def _rows_before(path: str, step: Optional[int]) -> Optional[tuple[list[str], list[dict[str, str]]]]:
    if step is None or not os.path.isfile(path):
        return None
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if int(row["step"]) < step]
        return list(reader.fieldnames or []), rows
