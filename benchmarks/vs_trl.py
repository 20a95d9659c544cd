"""lit_dpo against TRL's DPOTrainer on the same job, back to back: pairs/s, real tokens/s, peak RSS.

    python benchmarks/vs_trl.py                 # SmolLM2-135M-Instruct, demo pairs, 4 pairs a step, fp32
    python benchmarks/vs_trl.py --tiny          # a 2-layer random Llama: checks the script in seconds

Each system trains in its own process (so peak RSS is its own) on the same pairs in the same order, batch size,
max length, precision (fp32), optimizer (AdamW, constant learning rate, no gradient clipping: TRL's default
clipping at norm 1.0 is turned off so both make the same updates) and number of steps. Throughput is timed over
the steps after ``--warmup``; a reference pass before training (lit_dpo's default for a one-epoch fit, TRL's
``precompute_ref_log_probs``) is always recomputed and charged to the timed steps pro rata, since it replaces
their reference forwards. TRL runs twice: with its defaults (gradient checkpointing on, live reference) and with
its best settings for a CPU with room to spare (gradient checkpointing off, ``precompute_ref_log_probs=True``).
Real tokens count what a padded layout would compute without its padding: per pair, prompt + chosen and
prompt + rejected. Every system's loss at every step is compared with lit_dpo's: the same job gives the same
losses (to float rounding, which grows slowly over steps).
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
from typing import Any, Callable

SYSTEMS = ("lit_dpo", "trl_default", "trl_best")
# other lit_dpo settings, run with --variants: activation checkpointing (as TRL's defaults), the live reference
# model instead of cached log-probs, LoRA (rank 16, all linear layers; a different job: its losses differ) and
# torch.compile
VARIANTS = {
    "lit_dpo_checkpointing": {"activation_checkpointing": True},
    "lit_dpo_live_ref": {"precompute_ref_log_probs": False},
    "lit_dpo_lora": {"lora_r": 16, "lora_alpha": 32},
    "lit_dpo_compile": {"compile": True},  # its one-off compilation falls in the warm-up steps
    "lit_dpo_flex": {"attn_implementation": "flex_attention"},  # block masks: masked tiles are skipped
    "lit_dpo_padded": {"prefix_sharing": False},  # TRL's layout: 2B padded rows (a data option)
    "lit_dpo_unpacked": {"pack_length": 0},  # prefix sharing, one pair a row (a data option)
    "lit_dpo_plain_adamw": {"optimizer_in_backward": False},  # AdamW after the backward
    "lit_dpo_mkl": {},  # linear layers on PyTorch's own CPU path (MKL) instead of oneDNN: VARIANT_ENV
}
VARIANT_ENV = {"lit_dpo_mkl": {"LIT_DPO_ONEDNN": "0"}}  # variants set in the worker's environment
DATA_OPTIONS = ("prefix_sharing", "pack_length")  # variants' options that belong to the data module
TRL_LIGER = "trl_liger"  # TRL's defaults with use_liger_kernel=True (GPU only: Triton kernels), benchmarks/gpu.py


def _tiny_model(root: Path) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import make_model, make_tokenizer  # the tests' tiny model, as a plain function

    tokenizer = make_tokenizer()
    make_model(len(tokenizer), 0).save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    return str(root / "tiny")


def dialogue_pairs(root: Path, n: int, seed: int = 0) -> str:
    """``n`` dialogue-length pairs in hh-rlhf's raw style: a three-turn ``Human:``/``Assistant:`` prompt of 150-250
    words and answers of 60-140 words (random words: speed does not depend on the text), as a JSONL file."""
    import random

    rng = random.Random(seed)
    words = "the a cat dog runs fast slow over under house tree river mountain sky blue green red happy sad".split()

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))

    rows = [
        {"prompt": f"Human: {text(50, 80)}\n\nAssistant: {text(50, 90)}\n\nHuman: {text(50, 80)}\n\nAssistant:",
         "chosen": " " + text(60, 140), "rejected": " " + text(60, 140)}
        for _ in range(n)
    ]  # fmt: skip
    path = root / "dialogues.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _pairs(path: str, model: str, n: int) -> tuple[list[dict], int]:
    from lit_dpo.data import read_rows, tokenize_row
    from lit_dpo.hf import load_tokenizer

    rows = read_rows(path).rows[:n]
    tokenizer = load_tokenizer(model)
    pairs = [tokenize_row(tokenizer, r) for r in rows]
    tokens = sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    return [{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in rows], tokens


class KernelProfile:
    """``--profile_to FILE``: torch.profiler over two steps after the warm-up, its busiest operators written to FILE
    (by device time on a GPU, by CPU time on a CPU)."""

    def __init__(self, path: str, start_step: int) -> None:
        self.path, self.start_step, self.step, self.profiler = path, start_step, 0, None

    def step_ended(self) -> None:
        import torch

        self.step += 1
        if self.step == self.start_step:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
        elif self.step == self.start_step + 2 and self.profiler is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.profiler.__exit__(None, None, None)
            table = self.profiler.key_averages()
            by = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
            text = (
                table.table(sort_by=by, row_limit=30) + "\n" + table.table(sort_by="self_cpu_time_total", row_limit=20)
            )
            Path(self.path).write_text(text)


class Record:
    """Per-step end times and losses, and the seconds of the reference pass before training (if any)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.losses: list[float] = []
        self.ref_pass_s = 0.0
        self.components: dict[str, float] = {}  # lit_dpo: seconds per timed step, by component

    def timed(self, fn: Callable) -> Callable:
        def wrapper(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.ref_pass_s += time.perf_counter() - start

        return wrapper


def run_lit_dpo(args: argparse.Namespace, data: str) -> Record:
    import lightning as L
    from lightning.pytorch.profilers import SimpleProfiler

    from lit_dpo.data import PreferenceDataModule
    from lit_dpo.module import DPOModule
    from lit_dpo.reference import cached, schedule

    record = Record()
    profile = KernelProfile(args.profile_to, args.warmup) if args.profile_to else None
    cached.load = lambda key, rows: None  # always compute the pass, as TRL does for an in-memory dataset
    schedule.cache_stages = record.timed(schedule.cache_stages)  # ReferenceSchedule's one pass

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *_: Any) -> None:
            record.stamps.append(time.perf_counter())
            record.losses.append(outputs["loss"].item())
            if profile is not None:
                profile.step_ended()

    L.seed_everything(0)
    options = dict(VARIANTS.get(args.worker, {}))
    data_options = {name: options.pop(name) for name in DATA_OPTIONS if name in options}
    module = DPOModule(
        model_name_or_path=args.model, learning_rate=args.lr, warmup_steps=0, dtype=args.dtype, **options
    )
    datamodule = PreferenceDataModule(path=data, val_split=0, batch_size=args.batch, max_length=args.max_length,
                                      shuffle=False, tokenizer_name_or_path=args.model, **data_options)  # fmt: skip
    trainer = L.Trainer(max_steps=args.steps + args.warmup, accelerator=args.device, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Clock()], limit_val_batches=0, profiler=SimpleProfiler())  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    record.components = components(trainer.profiler.recorded_durations, args.steps)
    return record


# the Lightning profiler's actions, by component of a training step (names of a one-device fit)
COMPONENTS = {
    "data and collation": ("[_TrainingEpochLoop].train_dataloader_next",),
    "to device": ("[Strategy]SingleDeviceStrategy.batch_to_device",),
    "forward, loss, metrics": ("[Strategy]SingleDeviceStrategy.training_step",),
    "backward with AdamW": ("[Strategy]SingleDeviceStrategy.backward",),
    "gradient checks, train/ metrics": ("[LightningModule]DPOModule.on_before_optimizer_step",),
    "callbacks": ("[Callback]",),
}


def components(durations: dict[str, list[float]], steps: int) -> dict[str, float]:
    """Mean seconds per step of each component over the last ``steps`` steps (``SimpleProfiler``'s records);
    ``rest`` is the optimizer step's time outside its closure and the loop's own."""
    out = {}
    for name, prefixes in COMPONENTS.items():
        actions = [a for a in durations if a.startswith(prefixes) and (name != "callbacks" or "batch" in a)]
        out[name] = sum(sum(durations[a][-steps:]) for a in actions) / steps
    batch = sum(durations.get("run_training_batch", [])[-steps:]) / steps
    inside = sum(v for k, v in out.items() if k not in ("data and collation", "callbacks", "to device"))
    out["optimizer step, loop"] = batch - inside
    return out


def run_trl(args: argparse.Namespace, data: str, best: bool, liger: bool = False) -> Record:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback

    from lit_dpo.hf import load_tokenizer, resolve

    record = Record()
    trl.DPOTrainer._precompute_ref_logps = record.timed(trl.DPOTrainer._precompute_ref_logps)
    compute_loss = trl.DPOTrainer.compute_loss

    def recorded_loss(trainer: trl.DPOTrainer, model: Any, *a: Any, **k: Any) -> Any:
        out = compute_loss(trainer, model, *a, **k)
        if model.training:
            record.losses.append((out[0] if isinstance(out, tuple) else out).item())
        return out

    trl.DPOTrainer.compute_loss = recorded_loss

    profile = KernelProfile(args.profile_to, args.warmup) if args.profile_to else None

    class Clock(TrainerCallback):
        def on_step_end(self, *_: object, **__: object) -> None:
            record.stamps.append(time.perf_counter())
            if profile is not None:
                profile.step_ended()

    rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()]
    config = trl.DPOConfig(
        output_dir=tempfile.mkdtemp(), report_to="none", use_cpu=args.device == "cpu", bf16=args.dtype == "bfloat16",
        seed=0, use_liger_kernel=liger,
        per_device_train_batch_size=args.batch, max_steps=args.steps + args.warmup, learning_rate=args.lr,
        max_length=args.max_length, save_strategy="no", logging_steps=1000, lr_scheduler_type="constant",
        train_sampling_strategy="sequential", max_grad_norm=0.0,
        **({"gradient_checkpointing": False, "precompute_ref_log_probs": True} if best else {}),
    )  # fmt: skip
    trainer = trl.DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(resolve(args.model), dtype=getattr(torch, args.dtype)),  # TRL
        # loads its reference itself, in the policy's dtype
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(args.model),
        callbacks=[Clock()],
    )
    trainer.train()
    return record


def worker(args: argparse.Namespace) -> None:
    n = (args.steps + args.warmup) * args.batch
    rows, _ = _pairs(args.data, args.model, n)
    data = Path(tempfile.mkdtemp()) / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = (
        (lambda: run_lit_dpo(args, str(data)))
        if args.worker.startswith("lit_dpo")
        else (lambda: run_trl(args, str(data), args.worker == "trl_best", args.worker == TRL_LIGER))
    )
    if args.count_flops:  # a run of its own: the counter slows every operator down
        import flops  # benchmarks/flops.py, beside this file

        with flops.counted() as total:
            run()
        return print(json.dumps({"gflop_per_pair": total() / 1e9 / n}))
    record = run()
    _, tokens = _pairs(str(data), args.model, n)
    timed = record.stamps[args.warmup - 1 :] if args.warmup else record.stamps
    steps = len(timed) - 1
    # the reference pass scored every step's pairs: the timed steps' share of it counts as theirs
    seconds = timed[-1] - timed[0] + record.ref_pass_s * steps / (args.steps + args.warmup)
    per_step_tokens = tokens / (args.steps + args.warmup)
    print(json.dumps({
        "pairs_per_s": steps * args.batch / seconds,
        "tokens_per_s": steps * per_step_tokens / seconds,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_gpu_gib": _peak_gpu_gib(),
        "step_s": seconds / steps,
        "ref_pass_s": record.ref_pass_s,
        "losses": record.losses,
        "components": record.components,
    }))  # fmt: skip


def _peak_gpu_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def arguments(description: str) -> argparse.ArgumentParser:
    """The options every worker takes (``benchmarks/gpu.py`` runs these workers too)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="bundled:SmolLM2-135M-Instruct")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer random Llama instead of --model")
    parser.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[1] / "lit_dpo" / "data" / "demo" / "train.jsonl")
    )
    parser.add_argument("--workload", choices=("short", "long"), default="short", help="short: the demo pairs "
                        "(prompts ~20 tokens, answers ~17); long: dialogue-length pairs (dialogue_pairs), --data ignored")  # fmt: skip
    parser.add_argument("--steps", type=int, default=24, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=4, help="pairs per step")
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--repeats", type=int, default=1, help="runs per system; the median is reported")
    parser.add_argument("--variants", nargs="*", choices=tuple(VARIANTS), default=None,
                        help="also lit_dpo with other settings: these, or all (VARIANTS) when none is named")  # fmt: skip
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="both systems' weights")
    parser.add_argument("--profile_to", default=None, help="a worker writes its busiest operators to this file")
    parser.add_argument("--count_flops", action="store_true", help="one more run of each system, under PyTorch's "
                        "FLOP counter: the work it does per pair (GFLOP), and so the rate it runs at (GFLOP/s)")  # fmt: skip
    parser.add_argument("--worker", choices=SYSTEMS + tuple(VARIANTS) + (TRL_LIGER,), help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    if args.tiny:  # a worker started alone with --tiny makes its own
        args.model = _tiny_model(Path(tempfile.mkdtemp()))
    if args.worker:
        return worker(args)
    if args.workload == "long":
        args.data = dialogue_pairs(Path(tempfile.mkdtemp()), (args.steps + args.warmup) * args.batch)
    runs: dict[str, list[dict]] = {}
    variants = () if args.variants is None else tuple(args.variants or VARIANTS)
    systems = SYSTEMS[:1] + variants + SYSTEMS[1:]
    for _ in range(args.repeats):  # interleaved, so that a slow spell of a shared machine hits every system
        for system in systems:
            runs.setdefault(system, []).append(_run_worker(args, system))
    results = {system: _median_run(r) for system, r in runs.items()}
    if args.count_flops:
        for system, r in results.items():
            r["gflop_per_pair"] = _run_worker(args, system, count_flops=True)["gflop_per_pair"]
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, fp32, {args.model}")
    print(f"# {args.workload} workload, {args.batch} pairs/step, {args.steps} timed steps after {args.warmup}, max_length {args.max_length}"
          f"{f', median of {args.repeats} runs each' if args.repeats > 1 else ''}")  # fmt: skip
    print(
        f"{'system':22s} {'pairs/s':>8s} {'tokens/s':>9s} {'ref pass s':>10s} {'peak RSS GiB':>13s} {'loss diff':>10s}"
    )
    for system, r in results.items():
        diff = _max_relative_difference(r["losses"], results["lit_dpo"]["losses"])
        print(f"{system:22s} {r['pairs_per_s']:8.3f} {r['tokens_per_s']:9.1f} {r['ref_pass_s']:10.1f} "
              f"{r['peak_rss_gib']:13.2f} {diff:10.1e}")  # fmt: skip
    print("# loss diff: the largest relative difference from lit_dpo's loss, over every step")
    for system, r in results.items():
        if "gflop_per_pair" in r:
            print(f"# {system}: {r['gflop_per_pair']:.1f} GFLOP per pair (reference pass included), "
                  f"{r['gflop_per_pair'] * r['pairs_per_s']:.1f} GFLOP/s")  # fmt: skip
    for system, r in results.items():
        if r.get("components"):
            parts = ", ".join(f"{name} {seconds:.3f}" for name, seconds in r["components"].items())
            print(f"# {system}, seconds per step by component: {parts}")
    for mine in (s for s in results if s.startswith("lit_dpo")):
        for system in SYSTEMS[1:]:
            lit, r = results[mine], results[system]
            print(f"{mine} / {system}: {lit['pairs_per_s'] / r['pairs_per_s']:.2f}x pairs/s, "
                  f"{lit['peak_rss_gib'] / r['peak_rss_gib']:.2f}x peak RSS")  # fmt: skip


def _run_worker(args: argparse.Namespace, system: str, count_flops: bool = False) -> dict:
    command = [sys.executable, __file__, "--worker", system, "--model", args.model, "--data", args.data]
    command += ["--count_flops"] if count_flops else []
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch)]
    command += ["--max_length", str(args.max_length), "--lr", str(args.lr), "--device", args.device]
    command += ["--dtype", args.dtype]
    if getattr(args, "profile_dir", None):
        command += ["--profile_to", str(Path(args.profile_dir) / f"{system}.txt")]
    env = os.environ | {"PYTHONWARNINGS": "ignore"} | VARIANT_ENV.get(system, {})
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{system} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median_run(runs: list[dict]) -> dict:
    """The run of median throughput, with the highest peak RSS of all runs."""
    median = sorted(runs, key=lambda r: r["pairs_per_s"])[len(runs) // 2]
    return median | {"peak_rss_gib": max(r["peak_rss_gib"] for r in runs)}


def _max_relative_difference(losses: list[float], reference: list[float]) -> float:
    if len(losses) != len(reference):
        return float("nan")
    return max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, reference))


if __name__ == "__main__":
    main()
