"""The benchmarks still run against the library as it is now (a renamed function once broke vs_trl.py unseen)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.integration
def test_vs_trl_times_lit_dpo_on_a_tiny_model():
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "vs_trl.py"), "--tiny", "--worker", "lit_dpo", "--steps", "2", "--warmup", "0"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["pairs_per_s"] > 0 and figures["ref_pass_s"] > 0 and len(figures["losses"]) == 2


@pytest.mark.integration
def test_data_scale_measures_both_ways(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "data_scale.py"), "--rows", "300", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    row = done.stdout.strip().splitlines()[-1]
    assert row.startswith("| 300 (0 MB) |") and row.count(" s, ") == 4, done.stdout
