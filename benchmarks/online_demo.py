"""Time the online DPO demo as a user starts it, round by round:
``python -m lit_dpo.fit --config recipes/online/answers.yaml``.

    python benchmarks/online_demo.py [-- extra fit options]

Prints one row per round: the judge's mean and best score over the round's samples (from the policy as the
round starts), pairs formed, the round's wall time split into sampling + judging and training + validation, and
the held-out win-rate against the initial model after the round; then the total wall time against the 10-minute
target. A round's sampling time is what it logs (``online/generation_seconds``); the rest of its wall time is
read off the arrival times of the run's ``lit_dpo: round N`` lines.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "online" / "answers.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extra", nargs="*", help="options passed on to python -m lit_dpo.fit")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lit_dpo_online_"))
    command = [sys.executable, "-m", "lit_dpo.fit", "--config", str(RECIPE), f"--trainer.default_root_dir={root}",
               "--trainer.enable_progress_bar=false", *args.extra]  # fmt: skip
    start = time.perf_counter()
    arrivals: list[float] = []  # when each round's line came: its sampling had just ended
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as run:
        for line in run.stdout:
            if line.startswith("lit_dpo: round "):
                arrivals.append(time.perf_counter() - start)
            elif line.startswith("lit_dpo: ") and " steps; " in line:
                arrivals.append(time.perf_counter() - start)  # training's end (validation and export done)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"fit failed ({run.returncode}); rerun the command to see why: {' '.join(command)}")
    with open(root / "lightning_logs" / "version_0" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    rounds = [r for r in rows if r.get("online/round")]
    wins = [float(r["val/win_rate"]) for r in rows if r.get("val/win_rate")]
    print(f"# lit_dpo online demo, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"command  {' '.join(command[1:])}")
    print("| round | mean score | best score | pairs | sampling + judging | training + validation | win-rate after |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rounds):
        sampling = float(r["online/generation_seconds"])
        following = arrivals[i + 1] - (float(rounds[i + 1]["online/generation_seconds"]) if i + 1 < len(rounds) else 0)
        win = f"{wins[i]:.3f}" if i < len(wins) else "-"
        print(f"| {int(float(r['online/round']))} | {float(r['online/score_mean']):.3f} | "
              f"{float(r['online/score_max']):.3f} | {float(r['online/pairs']):.0f} "
              f"({float(r['online/pair_fraction']):.0%}) | {sampling:.1f} s | {following - arrivals[i]:.1f} s | {win} |")  # fmt: skip
    final = [r for r in rows if r.get("val/loss")][-1]
    print(f"wall time {wall:.1f} s (target <= 600 s: {'ok' if wall <= 600 else 'MISSED'}); final "
          f"val/rewards/accuracies {float(final['val/rewards/accuracies']):.3f}, margins "
          f"{float(final['val/rewards/margins']):.3f}")  # fmt: skip
    print(f"run directory {root / 'lightning_logs' / 'version_0'}")


if __name__ == "__main__":
    main()
