"""The benchmarks still run against the library as it is now (a renamed function once broke vs_trl.py unseen)."""

import importlib.util
import json
import os
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
    counted = subprocess.run(
        [sys.executable, str(BENCHMARKS / "vs_trl.py"), "--tiny", "--worker", "lit_dpo", "--steps", "2", "--warmup", "0",
         "--count_flops"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert counted.returncode == 0, counted.stderr[-2000:]
    assert json.loads(counted.stdout.strip().splitlines()[-1])["gflop_per_pair"] > 0


def test_flops_counts_the_cpu_attention_kernel():
    """PyTorch counts its GPU attention kernels only; on a CPU every query against every key, grouped heads too."""
    import torch

    spec = importlib.util.spec_from_file_location("flops", BENCHMARKS / "flops.py")
    flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flops)
    q = torch.randn(2, 6, 5, 8, requires_grad=True)  # (B, H, T, D), 2 key/value heads for 6 query heads
    k, v = torch.randn(2, 2, 7, 8, requires_grad=True), torch.randn(2, 2, 7, 8, requires_grad=True)
    with flops.counted() as total:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        forward = total()
        out.sum().backward()
    scores = 2 * 2 * 6 * 5 * 7 * 8  # one (T, D) x (D, S) product per head: 2 flops a multiply-add
    assert forward == 2 * scores  # scores, then their product with the values
    assert total() - forward == 5 * scores  # the scores again, and four products for the three gradients


def test_data_scale_measures_both_ways(tmp_path):
    """The measured functions, in this process (the script runs each in a fresh one): both give every row."""
    spec = importlib.util.spec_from_file_location("data_scale", BENCHMARKS / "data_scale.py")
    data_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data_scale)
    data_scale.hh_rows(tmp_path / "rows.jsonl", 300)
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 300
    assert data_scale.lit_dpo_start(str(tmp_path / "rows.jsonl"), str(tmp_path / "lit_dpo"))["examples"] == 300
    assert data_scale.datasets_map(str(tmp_path / "rows.jsonl"), str(tmp_path / "datasets"), 1)["examples"] == 300
    streamed = data_scale.lit_dpo_stream(str(tmp_path / "rows.jsonl"), str(tmp_path / "stream"), "")
    state = json.dumps(data_scale.last_window_state(tmp_path / "rows.jsonl"))  # the only window: from its start
    assert streamed == data_scale.lit_dpo_stream(str(tmp_path / "rows.jsonl"), str(tmp_path / "stream"), state)
    assert streamed["examples"] == 300


@pytest.mark.integration
def test_plan_check_measures_the_tiny_case(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "plan_check.py"), "--cases", "tiny, 1 process", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PLAN_CHECK_WORK": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = json.loads((tmp_path / "r.json").read_text())
    assert result["measured"] > 0 and 0.5 < result["ratio"] < 2  # a sanity bound: the figures are the script's


@pytest.mark.integration
def test_the_vlm_benchmark_runs_both_systems_with_the_same_losses():
    """On Qwen2-VL (its workers load the tests' processor; the Idefics3 default differs only in the model built)."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "vlm.py"), "--steps", "1", "--warmup", "1", "--hidden", "32", "--layers",
         "2", "--tile", "32", "--patch", "8", "--train_vision", "--systems", "lit_dpo", "trl_default",
         "--family", "qwen2_vl"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.startswith(("lit_dpo ", "trl_"))}
    assert set(rows) == {"lit_dpo", "trl_default"} and float(rows["trl_default"][-1]) < 1e-4  # the same losses
