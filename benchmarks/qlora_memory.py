"""QLoRA against LoRA on the same job: peak RSS, the base's weight bytes and seconds per step, one process each.

    python benchmarks/qlora_memory.py                  # SmolLM2-135M-Instruct (bundled), LoRA r=16, 4 pairs a step
    python benchmarks/qlora_memory.py --steps 12 --model HuggingFaceTB/SmolLM2-360M-Instruct

Each variant runs ``python -m lit_dpo.fit`` in its own process (``--model.lora_r=16``, the live reference, which is
the base with its adapters off, and no generation), with and without ``--model.quantization=nf4``. Peak RSS is
sampled every 20 ms while training runs (``TrainingPeak``; freed heap returned to the OS first with glibc's
``malloc_trim``), and over the whole process (loading, where transformers
quantizes the full-precision weights it reads, and the export, which merges the adapters into a full-precision
copy of the base, included). Seconds per step come from the difference of the ``--steps`` run and a 2-step run, so
loading and the final validation cancel out. Prints one JSON line per variant and a table.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lightning as L

VARIANTS = {"lora": [], "qlora (nf4)": ["--model.quantization=nf4"]}


def _rss_gib() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:")) / 2**20


class TrainingPeak(L.Callback):
    """Samples the process's RSS while training runs; writes the peak (GiB) to ``path`` at the end."""

    def __init__(self, path: str) -> None:
        self.path, self.peak, self.running = path, 0.0, False

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, _rss_gib())
            time.sleep(0.02)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # what loading freed (the full-precision weights transformers reads before quantizing them) back to the OS,
        # so that the peak is what training holds
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.running = True
        threading.Thread(target=self._sample, daemon=True).start()

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.running = False
        Path(self.path).write_text(str(self.peak))


def _run(model: str, steps: int, extra: list[str], root: str) -> tuple[float, float, float]:
    """Wall seconds, the training peak RSS and the child's peak RSS (GiB) of one fit."""
    args = [sys.executable, "-m", "lit_dpo.fit", f"--model.model_name_or_path={model}", "--model.lora_r=16",
            "--model.precompute_ref_log_probs=false", "--generations.num_prompts=0", f"--trainer.max_steps={steps}",
            "--trainer.enable_progress_bar=false", "--checkpoint.every_minutes=0", f"--trainer.default_root_dir={root}",
            "--trainer.callbacks+=qlora_memory.TrainingPeak", f"--trainer.callbacks.path={root}/peak", *extra]  # fmt: skip
    start = time.perf_counter()
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent)}
    subprocess.run(args, check=True, capture_output=True, env=env)
    process_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return time.perf_counter() - start, float(Path(f"{root}/peak").read_text()), process_peak


def _base_bytes(model: str, quantization: list[str]) -> float:
    from lit_dpo.hf import load_model

    loaded = load_model(model, quantization="nf4" if quantization else None)
    return sum(p.numel() * p.element_size() for p in loaded.parameters()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bundled:SmolLM2-135M-Instruct")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for name, extra in VARIANTS.items():  # one variant per child process: ru_maxrss of children is a running max
        command = [sys.executable, __file__, "--worker", name, args.model, str(args.steps)]
        rows.append(
            json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        )
        print(json.dumps(rows[-1]), flush=True)
    print("\n| variant | base weights | peak RSS training | peak RSS process | s/step |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['base_mib']:.0f} MiB | {r['training_peak_gib']:.2f} GiB | "
              f"{r['process_peak_gib']:.2f} GiB | {r['s_per_step']:.2f} |")  # fmt: skip


def worker(name: str, model: str, steps: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        short, _, _ = _run(model, 2, VARIANTS[name], f"{root}/short")
        long, training, process = _run(model, steps, VARIANTS[name], f"{root}/long")
    row = {"variant": name, "base_mib": _base_bytes(model, VARIANTS[name]), "training_peak_gib": training,
           "process_peak_gib": process, "s_per_step": (long - short) / (steps - 2)}  # fmt: skip
    print(json.dumps(row))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
