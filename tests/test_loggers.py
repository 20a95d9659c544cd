"""lit_dpo/loggers.py: a resumed run's metrics.csv keeps what came before its checkpoint; the recorder keeps all."""

import csv

from lit_dpo.loggers import MetricsRecorder, ResumableCSVLogger


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_resumed_csv_logger_keeps_the_rows_before_its_step(tmp_path):
    first = ResumableCSVLogger(tmp_path, name="logs", version=0)
    for step in range(4):
        first.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    first.save()
    resumed = ResumableCSVLogger(tmp_path, name="logs", version=0, resume_step=2)
    assert len(_rows(first.experiment.metrics_file_path)) == 4  # untouched until the resumed run saves
    resumed.log_metrics({"train/loss": 0.3, "val/loss": 0.2}, step=2)
    resumed.save()
    rows = _rows(resumed.experiment.metrics_file_path)
    assert [row["step"] for row in rows] == ["0", "1", "2"]  # step 2 and 3 of the interrupted run are redone
    assert rows[-1]["val/loss"] == "0.2" and rows[0]["val/loss"] == ""


def test_the_recorder_keeps_every_metric_by_step():
    recorder = MetricsRecorder()
    recorder.log_metrics({"train/loss": 0.5, "epoch": 0}, step=0)
    recorder.log_metrics({"train/loss": 0.25, "val/loss": 0.4}, step=1)
    assert recorder.series == {"train/loss": [(0, 0.5), (1, 0.25)], "val/loss": [(1, 0.4)]}
