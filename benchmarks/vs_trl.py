"""lit_dpo against TRL's DPOTrainer on the same job, back to back: pairs/s, real tokens/s, peak RSS.

    python benchmarks/vs_trl.py                 # SmolLM2-135M-Instruct, demo pairs, 4 pairs a step, fp32
    python benchmarks/vs_trl.py --tiny          # a 2-layer random Llama: checks the script in seconds

Each system trains in its own process (so peak RSS is its own) on the same pairs, batch size, max length,
precision (fp32), learning rate and number of steps; throughput is timed over the steps after ``--warmup``.
TRL runs twice: with its defaults (gradient checkpointing on) and with its best settings for a CPU with room
to spare (gradient checkpointing off, ``precompute_ref_log_probs=True``). Real tokens count what a padded
layout would compute without its padding: per pair, prompt + chosen and prompt + rejected.
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

SYSTEMS = ("lit_dpo", "trl_default", "trl_best")
# lit_dpo's reference options, run with --variants: cached reference log-probs, LoRA (rank 16, all linear layers)
VARIANTS = {"lit_dpo_cached": {"precompute_ref_log_probs": True}, "lit_dpo_lora": {"lora_r": 16, "lora_alpha": 32}}


def _tiny_model(root: Path) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import make_model, make_tokenizer

    tokenizer = make_tokenizer()
    make_model(len(tokenizer), 0).save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    return str(root / "tiny")


def _pairs(path: str, model: str, n: int) -> tuple[list[dict], int]:
    from lit_dpo.models import load_tokenizer
    from lit_dpo.rows import read_rows
    from lit_dpo.tokenization import tokenize_pair

    rows = read_rows(path)[:n]
    tokenizer = load_tokenizer(model)
    pairs = [tokenize_pair(tokenizer, r) for r in rows]
    tokens = sum(2 * len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)
    return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows], tokens


def run_lit_dpo(args: argparse.Namespace, data: str) -> list[float]:
    import lightning as L

    from lit_dpo.data import PreferenceDataModule
    from lit_dpo.module import DPOModule

    stamps: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_end(self, *_: object) -> None:
            stamps.append(time.perf_counter())

    L.seed_everything(0)
    options = VARIANTS.get(args.worker, {})
    module = DPOModule(model_name_or_path=args.model, learning_rate=args.lr, warmup_steps=0, **options)
    datamodule = PreferenceDataModule(path=data, val_split=0, batch_size=args.batch, max_length=args.max_length,
                                      shuffle=False, tokenizer_name_or_path=args.model)  # fmt: skip
    trainer = L.Trainer(max_steps=args.steps + args.warmup, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Clock()], limit_val_batches=0)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    return stamps


def run_trl(args: argparse.Namespace, data: str, best: bool) -> list[float]:
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback

    from lit_dpo.models import load_tokenizer, resolve

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_: object, **__: object) -> None:
            stamps.append(time.perf_counter())

    rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()]
    config = trl.DPOConfig(
        output_dir=tempfile.mkdtemp(), report_to="none", use_cpu=True, bf16=False, seed=0,
        per_device_train_batch_size=args.batch, max_steps=args.steps + args.warmup, learning_rate=args.lr,
        max_length=args.max_length, save_strategy="no", logging_steps=1000, lr_scheduler_type="constant",
        **({"gradient_checkpointing": False, "precompute_ref_log_probs": True} if best else {}),
    )  # fmt: skip
    path = resolve(args.model)
    trainer = trl.DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        ref_model=AutoModelForCausalLM.from_pretrained(path),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(args.model),
        callbacks=[Clock()],
    )
    trainer.train()
    return stamps


def worker(args: argparse.Namespace) -> None:
    n = (args.steps + args.warmup) * args.batch
    rows, _ = _pairs(args.data, args.model, n)
    data = Path(tempfile.mkdtemp()) / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stamps = (
        run_lit_dpo(args, str(data))
        if args.worker.startswith("lit_dpo")
        else run_trl(args, str(data), args.worker == "trl_best")
    )
    _, tokens = _pairs(str(data), args.model, n)
    timed = stamps[args.warmup - 1 :] if args.warmup else stamps
    seconds = timed[-1] - timed[0]
    steps = len(timed) - 1
    per_step_tokens = tokens / (args.steps + args.warmup)
    print(json.dumps({
        "pairs_per_s": steps * args.batch / seconds,
        "tokens_per_s": steps * per_step_tokens / seconds,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "steps_timed": steps,
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:SmolLM2-135M-Instruct")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer random Llama instead of --model")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / "lit_dpo" / "demo" / "train.jsonl"))
    parser.add_argument("--steps", type=int, default=24, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=4, help="pairs per step")
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--variants", action="store_true", help="also lit_dpo with cached reference logps, and LoRA")
    parser.add_argument("--worker", choices=SYSTEMS + tuple(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.tiny:
        args.model = _tiny_model(Path(tempfile.mkdtemp()))
    results = {}
    systems = SYSTEMS[:1] + (tuple(VARIANTS) if args.variants else ()) + SYSTEMS[1:]
    for system in systems:
        command = [sys.executable, __file__, "--worker", system, "--model", args.model, "--data", args.data]
        command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch)]
        command += ["--max_length", str(args.max_length), "--lr", str(args.lr)]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"PYTHONWARNINGS": "ignore"})
        if done.returncode:
            sys.exit(f"{system} failed:\n{done.stderr[-3000:]}")
        results[system] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, fp32, {args.model}")
    print(f"# {args.batch} pairs/step, {args.steps} timed steps after {args.warmup}, max_length {args.max_length}")
    print(f"{'system':15s} {'pairs/s':>8s} {'tokens/s':>9s} {'peak RSS GiB':>13s}")
    for system, r in results.items():
        print(f"{system:15s} {r['pairs_per_s']:8.3f} {r['tokens_per_s']:9.1f} {r['peak_rss_gib']:13.2f}")
    for mine in (s for s in results if s.startswith("lit_dpo")):
        for system in SYSTEMS[1:]:
            lit, r = results[mine], results[system]
            print(f"{mine} / {system}: {lit['pairs_per_s'] / r['pairs_per_s']:.2f}x pairs/s, "
                  f"{lit['peak_rss_gib'] / r['peak_rss_gib']:.2f}x peak RSS")  # fmt: skip


if __name__ == "__main__":
    main()
