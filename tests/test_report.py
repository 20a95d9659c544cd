"""lit_dpo/report.py: report.png from a run's metrics.csv, drawn at the end of a fit and on demand."""

import csv
import subprocess
import sys

import pytest

from lit_dpo.report import PANELS, draw_report, main, read_metrics


@pytest.fixture
def run(tmp_path):
    keys = sorted({metric for curves in PANELS.values() for metric, _ in curves})
    with open(tmp_path / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "step", *keys])
        writer.writeheader()
        for step in range(10):
            writer.writerow(
                {"epoch": 0, "step": step, **{k: step * 0.1 for k in keys if k.startswith(("train", "perf"))}}
            )
        writer.writerow({"epoch": 0, "step": 9, **{k: 0.75 for k in keys if k.startswith("val")}})
    return tmp_path


def test_the_report_draws_every_panel_it_has_data_for(run):
    from PIL import Image

    path = draw_report(run)
    assert path == run / "report.png"
    with Image.open(path) as image:
        assert image.size == (2000, 720)  # 4 x 2 panels of 5 x 3.6 inches at 100 dpi
        assert len(set(image.convert("L").getdata())) > 50  # drawn, not blank
    series = read_metrics(run / "metrics.csv")
    assert series["val/win_rate"] == [(9, 0.75)] and len(series["train/loss"]) == 10


def test_python_m_lit_dpo_report_redraws_it(run, capsys):
    (run / "report.png").unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "lit_dpo.report", str(run)], capture_output=True, text=True)
    assert done.returncode == 0 and (run / "report.png").is_file() and "lit_dpo: report" in done.stdout
    with pytest.raises(SystemExit) as exit_info:
        main([str(run / "nowhere")])
    assert exit_info.value.code == 2 and "not a run directory" in capsys.readouterr().err
