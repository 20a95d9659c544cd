"""Peak memory while a checkpoint is saved: Lightning's default writer (the whole checkpoint serialised into an
in-memory buffer, then written) against lit_dpo's (streamed into a temporary file, then renamed).

    python benchmarks/checkpoint_memory.py              # SmolLM2-135M-Instruct, fp32, 4 pairs a step, cached reference
    python benchmarks/checkpoint_memory.py --steps 6

Each writer runs `python -m lit_dpo.fit` in its own process (the default options, `--trainer.max_steps`,
`--model.precompute_ref_log_probs=true` as the default one-epoch run has it); a thread samples the process's RSS
every 50 ms, and the checkpoint writer marks when each save starts and ends. Prints the peak RSS outside saves and
during them, and writes the trace as CSV.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _rss_gib() -> float:
    with open("/proc/self/status") as handle:
        kib = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    return kib / 2**20


def worker(writer: str, steps: int, trace_path: str) -> None:
    from lightning.fabric.plugins import TorchCheckpointIO

    from lit_dpo import checkpoints, cli, fit

    trace: list[tuple[float, float, str]] = []
    state = {"phase": "train", "stop": False}
    start = time.perf_counter()

    def sample() -> None:
        while not state["stop"]:
            trace.append((time.perf_counter() - start, _rss_gib(), state["phase"]))
            time.sleep(0.05)

    base = checkpoints.AtomicCheckpointIO if writer == "lit_dpo" else TorchCheckpointIO

    class Marked(base):  # type: ignore[misc, valid-type]
        def save_checkpoint(self, *args: object, **kwargs: object) -> None:
            state["phase"] = "save"
            try:
                super().save_checkpoint(*args, **kwargs)
            finally:
                state["phase"] = "train"

    original = cli.DPOCLI._instantiate_trainer

    def with_writer(self, config, callbacks):  # type: ignore[no-untyped-def]  # the writer under test, marked
        trainer = original(self, config, callbacks)
        trainer.strategy.checkpoint_io = Marked()
        return trainer

    cli.DPOCLI._instantiate_trainer = with_writer  # type: ignore[method-assign]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    root = tempfile.mkdtemp()
    fit.main([f"--trainer.default_root_dir={root}", f"--trainer.max_steps={steps}", "--trainer.limit_val_batches=2",
              "--model.precompute_ref_log_probs=true", "--trainer.enable_progress_bar=false"])  # fmt: skip
    state["stop"] = True
    sampler.join()
    Path(trace_path).write_text(json.dumps(trace))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/checkpoint_memory.csv")
    parser.add_argument("--worker", choices=["lightning", "lit_dpo"], help=argparse.SUPPRESS)
    parser.add_argument("--trace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.trace)
    rows = []
    print(
        f"# {time.strftime('%Y-%m-%d')}, SmolLM2-135M-Instruct fp32, 4 pairs a step, {args.steps} steps, cached reference"
    )
    print(f"{'checkpoint writer':32s} {'peak RSS, training GiB':>23s} {'peak RSS, saving GiB':>21s}")
    for writer, label in (
        ("lightning", "Lightning's default (in memory)"),
        ("lit_dpo", "lit_dpo (streamed to a file)"),
    ):
        trace_path = tempfile.mktemp(suffix=".json")
        command = [sys.executable, __file__, "--worker", writer, "--steps", str(args.steps), "--trace", trace_path]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{writer} failed:\n{done.stderr[-3000:]}")
        trace = json.loads(Path(trace_path).read_text())
        peak = {phase: max((rss for _, rss, p in trace if p == phase), default=0.0) for phase in ("train", "save")}
        print(f"{label:32s} {peak['train']:23.2f} {peak['save']:21.2f}")
        rows += [
            {"writer": writer, "seconds": round(t, 2), "rss_gib": round(rss, 3), "phase": p} for t, rss, p in trace
        ]
    with open(args.out, "w", newline="") as handle:
        writer_csv = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer_csv.writeheader()
        writer_csv.writerows(rows)
    print(f"trace: {args.out}")


if __name__ == "__main__":
    main()
