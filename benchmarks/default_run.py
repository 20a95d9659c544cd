"""Time the no-argument run, as a user starts it: ``python -m lit_dpo.fit``.

    python benchmarks/default_run.py [--cold] [-- extra fit options]

Prints wall time (model load, training, validation and export included), peak RSS, steps and the final
``val/`` metrics, against the targets (<= 300 s, val/rewards/accuracies >= 0.9). ``--cold`` uses an empty
conversion cache, so the one-off GGUF -> safetensors conversion of the bundled model is timed too.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="start from an empty model conversion cache")
    parser.add_argument("extra", nargs="*", help="options passed on to python -m lit_dpo.fit")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lit_dpo_bench_"))
    env = dict(os.environ)
    if args.cold:
        env["LIT_DPO_CACHE"] = str(root / "cache")
    command = [sys.executable, "-m", "lit_dpo.fit", f"--trainer.default_root_dir={root}", *args.extra]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"fit failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak_rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    with open(root / "lightning_logs" / "version_0" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    final = [r for r in rows if r.get("val/loss")][-1]
    steps = sum(1 for r in rows if r.get("train/loss"))
    print(
        f"# lit_dpo default run, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    print(f"command          {' '.join(command[1:])}{'  (cold cache)' if args.cold else ''}")
    print(f"wall time        {wall:.1f} s   (target <= 300 s: {'ok' if wall <= 300 else 'MISSED'})")
    print(f"peak RSS         {peak_rss_gib:.2f} GiB")
    print(f"optimizer steps  {steps}")
    for key in ("val/loss", "val/rewards/accuracies", "val/rewards/margins", "val/logps/chosen", "val/logps/rejected"):
        print(f"{key:16s} {float(final[key]):.4f}")
    accuracy = float(final["val/rewards/accuracies"])
    print(f"val accuracy target >= 0.9: {'ok' if accuracy >= 0.9 else 'MISSED'}")
    print(f"run directory    {root / 'lightning_logs' / 'version_0'}")


if __name__ == "__main__":
    main()
