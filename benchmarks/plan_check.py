"""The memory plan against measured peaks: ``python -m lit_dpo.plan`` and ``python -m lit_dpo.fit`` with the same
options, on SmolLM-shaped models of several sizes (random weights, SmolLM2's tokenizer), 1 and 2 CPU processes,
DDP and FSDP, side by side in one run.

    python benchmarks/plan_check.py                  # every case (about 40 minutes on 2 cores)
    python benchmarks/plan_check.py --cases tiny     # the cases whose name contains "tiny"

Measured: per process, the peak RSS (``ru_maxrss``) minus the RSS when the fit's ``setup`` starts (libraries,
tokenizer and data loaded; no model yet), the largest over the processes; what the plan estimates is the same
thing (the model's weights, gradients, optimizer state, reference, activations, logits and the strategy's
buffers), so the two compare directly. Rows are synthetic pairs of exactly ``PROMPT`` prompt tokens and
``COMPLETION`` completion tokens (EOS included), so the plan is told the true lengths.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

PROMPT, COMPLETION = 64, 64
SIZES = {  # SmolLM2's shapes (135M is SmolLM2-135M's config, 360M SmolLM2-360M's), tied embeddings, vocab 49,152
    "tiny": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2),
    "135M": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3),
    "360M": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5),
}  # fmt: skip
FSDP = "--trainer.strategy.class_path=lit_dpo.parallel.FSDPStrategy"
CASES = {  # name: (size, processes, extra options)
    "tiny, 1 process": ("tiny", 1, []),
    "tiny, 2 processes, DDP": ("tiny", 2, ["--trainer.strategy=ddp"]),
    "135M, 1 process": ("135M", 1, []),
    "135M, 1 process, live reference": ("135M", 1, ["--model.precompute_ref_log_probs=false"]),
    "135M, 1 process, padded rows": ("135M", 1, ["--data.prefix_sharing=false"]),
    "135M, 1 process, activation checkpointing": ("135M", 1, ["--model.activation_checkpointing=true"]),
    "135M, 1 process, LoRA": ("135M", 1, ["--model.lora_r=16"]),
    "135M, 2 processes, DDP": ("135M", 2, ["--trainer.strategy=ddp"]),
    "135M, 2 processes, FSDP": ("135M", 2, [FSDP]),
    "360M, 1 process": ("360M", 1, []),
    "360M, 2 processes, FSDP": ("360M", 2, [FSDP]),
}  # fmt: skip
# steps per process: the peak comes with the optimizer state and the previous step's gradients (step 2 on), and
# a DDP process reaches it from step 3 only (135M: 3.28 GiB over two steps, 3.75 GiB over three, 2026-12-01)
STEPS = 3


class PeakMemory(L.Callback):
    """Writes this process's RSS at ``setup`` and its peak RSS after each training batch to ``$PLAN_CHECK_OUT``."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.baseline = _rss()

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        record = {"baseline": self.baseline, "peak": peak, "step": trainer.global_step}
        Path(os.environ["PLAN_CHECK_OUT"], f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_model(folder: Path, size: str) -> Path:
    """A randomly initialised SmolLM-shaped Llama with SmolLM2's tokenizer, saved as a HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from lit_dpo.hf import BUNDLED, load_tokenizer

    path = folder / size
    if not (path / "model.safetensors").exists():
        config = LlamaConfig(vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0, **SIZES[size])
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(path)
        load_tokenizer(BUNDLED).save_pretrained(path)
    return path


FIRST_WORDS = ("the", "a", "one", "two", "this", "that", "it", "we")  # one token each, and apart


def make_data(path: Path, rows: int) -> Path:
    """``rows`` pairs of ``PROMPT`` prompt tokens and ``COMPLETION`` completion tokens (EOS included) in SmolLM2's
    tokenizer: each first word, " the", " yes", " no" is one token. The prompts start with different words: the
    plan counts no prompt start shared within a packed row, and the fit then computes none."""
    lines = [{"prompt": FIRST_WORDS[i % len(FIRST_WORDS)] + " the" * (PROMPT - 1), "chosen": " yes" * (COMPLETION - 1),
              "rejected": " no" * (COMPLETION - 1)} for i in range(rows)]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def options(model: Path, data: Path, processes: int, extra: list[str], root: Path) -> list[str]:
    return [
        f"--model.model_name_or_path={model}", f"--data.path={data}", "--data.val_split=0", "--data.batch_size=4",
        "--data.max_length=512", "--trainer.accelerator=cpu", f"--trainer.devices={processes}",
        f"--trainer.default_root_dir={root}", "--trainer.enable_checkpointing=false", *extra,
    ]  # fmt: skip


def run_case(name: str, work: Path) -> dict:
    size, processes, extra = CASES[name]
    model = make_model(work / "models", size)
    data = make_data(work / f"pairs{processes}x{STEPS}.jsonl", 4 * STEPS * processes)
    out = Path(tempfile.mkdtemp(dir=work))
    args = options(model, data, processes, extra, out / "runs")
    tokens = [f"--prompt_tokens={PROMPT}", f"--completion_tokens={COMPLETION}"]
    plan_json = out / "plan.json"
    subprocess.run([sys.executable, "-m", "lit_dpo.plan", *args, *tokens, f"--output={plan_json}", "--memory_gb=1000"],
                   check=True, capture_output=True)  # fmt: skip
    start = time.perf_counter()
    # glibc keeps freed heap memory for reuse (its mmap threshold rises as tensors are freed), so a CPU process's RSS
    # keeps what a GPU's caching allocator would report as reserved: allocations of 64 KiB and more are mapped and
    # given back, so that the peak RSS is the peak of the tensors alive
    # a cache of its own: the reference's pass before training runs every time (its peak can be the fit's)
    env = {**os.environ, "PLAN_CHECK_OUT": str(out), "MALLOC_MMAP_THRESHOLD_": "65536", "LIT_DPO_CACHE": str(out)}
    fit = [sys.executable, __file__, "--fit", *args, "--trainer.callbacks+=__main__.PeakMemory"]
    subprocess.run(fit, check=True, env=env, capture_output=True)
    seconds = time.perf_counter() - start
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    measured = max(r["peak"] - r["baseline"] for r in ranks)
    plan = json.loads(plan_json.read_text())["parts"]
    return {"case": name, "planned": plan["peak"], "measured": measured, "ratio": plan["peak"] / measured,
            "seconds": round(seconds, 1), "parts": plan, "ranks": ranks}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="", help="Run the cases whose name contains this text.")
    parser.add_argument("--json", default=None, help="Also write the results here.")
    args = parser.parse_args()
    work = Path(os.environ.get("PLAN_CHECK_WORK") or tempfile.mkdtemp(prefix="plan_check_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"plan vs measured, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPUs; "
          f"pairs of {PROMPT} + {COMPLETION} tokens, 4 per process per step")  # fmt: skip
    print(f"{'case':48s} {'planned':>9s} {'measured':>9s} {'plan/measured':>14s}")
    results = []
    for name in [n for n in CASES if args.cases in n]:
        result = run_case(name, work)
        results.append(result)
        print(f"{name:48s} {result['planned'] / 2**30:8.2f}G {result['measured'] / 2**30:8.2f}G "
              f"{result['ratio']:14.2f}", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fit"]:  # one fit (each DDP process re-runs this command line)
        from lit_dpo.fit import main as fit

        fit(sys.argv[2:])
    else:
        main()
