"""``report.png``: a run's metrics over optimizer steps on one page. Drawn at the end of every fit (``FinishRun``)
from the run's ``metrics.csv``, or from the metrics it logged when another logger (W&B) writes none;
``python -m lit_dpo.report RUN_DIR`` redraws it from ``metrics.csv``."""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Optional

# panel title -> (metric, label) curves; val/ ones are drawn as points (one per validation)
PANELS = {
    "Loss": [("train/loss", "train"), ("val/loss", "val")],
    "Reward margin (chosen - rejected)": [("train/rewards/margins", "train"), ("val/rewards/margins", "val")],
    "Reward accuracy": [("train/rewards/accuracies", "train"), ("val/rewards/accuracies", "val")],
    "Log-probs, policy vs reference (train)": [
        ("train/logps/chosen", "chosen, policy"),
        ("train/ref_logps/chosen", "chosen, reference"),
        ("train/logps/rejected", "rejected, policy"),
        ("train/ref_logps/rejected", "rejected, reference"),
    ],  # fmt: skip
    "KL(policy || reference) per completion": [("train/kl", "train"), ("val/kl", "val")],
    "Win-rate vs reference (ties half); online judge score": [
        ("val/win_rate", "val win-rate"),
        ("online/score_mean", "online samples, mean score"),  # one point per round of online DPO
    ],
    "Generation length (tokens)": [
        ("val/gen_length/policy", "policy"),
        ("val/gen_length/reference", "reference"),
        ("online/gen_length", "online samples"),
    ],
    "Throughput (tokens/s)": [("perf/tokens_per_sec", "train")],
}


def read_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Each metric's ``(step, value)`` points from a ``metrics.csv``."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series.setdefault(key, []).append((int(row["step"]), float(value)))
    return series


def draw_report(
    run: Path, out: Optional[Path] = None, series: Optional[dict[str, list[tuple[int, float]]]] = None
) -> Optional[Path]:
    """Draw ``run/report.png`` from ``run/metrics.csv``, or from ``series`` (``{metric: [(step, value)]}``, as
    ``lit_dpo.loggers.MetricsRecorder`` keeps them) when the run has no CSV metrics; None when it has neither."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    metrics_file = run / "metrics.csv"
    if metrics_file.is_file():
        series = read_metrics(metrics_file)
    if not series:
        return None
    panels = [(title, [c for c in curves if c[0] in series]) for title, curves in PANELS.items()]
    panels = [(title, curves) for title, curves in panels if curves]
    columns = 4
    rows = max(1, math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    last_step = max((step for points in series.values() for step, _ in points), default=0)
    for ax, (title, curves) in zip(axes.flat, panels):
        for metric, label in curves:
            steps, values = zip(*series[metric])
            style = {"marker": "o"} if metric.startswith(("val/", "online/")) else {"linewidth": 1.2}
            ax.plot(steps, values, label=label, **style)
        if "Win-rate" in title:
            ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
            ax.set_ylim(-0.05, 1.05)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-0.5, last_step + 0.5)  # one x-axis for every panel, even one with a single validation
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.suptitle(f"{run}: {_summary(series)}", fontsize=11)
    figure.tight_layout()
    path = out or run / "report.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _summary(series: dict[str, list[tuple[int, float]]]) -> str:
    final = {k: v[-1][1] for k, v in series.items()}
    parts = [f"{label} {final[key]:.3g}" for key, label in (("val/rewards/accuracies", "val accuracy"),
             ("val/rewards/margins", "val margin"), ("val/win_rate", "win-rate")) if key in final]  # fmt: skip
    last = max((s for points in series.values() for s, _ in points), default=0)
    return ", ".join([f"logged to step {last}", *parts])


def main(args: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit_dpo.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory holding metrics.csv")
    parser.add_argument("--out", type=Path, default=None, help="where to write the PNG (default RUN_DIR/report.png)")
    options = parser.parse_args(args)
    path = draw_report(options.run_dir, options.out)
    if path is None:
        parser.exit(2, f"lit_dpo: error: {options.run_dir / 'metrics.csv'} not found: not a run directory\n")
    print(f"lit_dpo: report {path}")


if __name__ == "__main__":
    main()
