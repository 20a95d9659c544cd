"""lit_dpo against TRL's DPOTrainer on vision-language pairs, side by side: seconds per step, peak RSS, losses.

    python benchmarks/vlm.py                 # a random Idefics3 (SmolVLM's family), 4 layers, hidden 256, 224px tiles
    python benchmarks/vlm.py --family qwen2_vl --patch 14   # a random Qwen2-VL: images of 224-448 px, 64-256 tokens
    python benchmarks/vlm.py --steps 2 --warmup 1 --hidden 64 --tile 32    # checks the script in seconds

Every system trains the same random model (seed 0) on the same rows in the same order (batches of ``--batch``
pairs, AdamW at a constant rate, no gradient clipping, fp32, a live reference: the model's initial weights), each
in its own process (its peak RSS is its own). A row is a conversational prompt with one image of 1-2 tiles a side
(each tile ``(tile / patch)^2 / 4`` image tokens, plus a global tile for Idefics3; Qwen2-VL takes the image whole,
one token per 2 x 2 patches) and a question, and two text answers:

- ``lit_dpo``: defaults (prefix sharing: each pair's image through the vision encoder once, vision frozen);
- ``lit_dpo_padded``: ``--data.prefix_sharing=false`` (TRL's layout: the prompt and its image twice);
- ``trl_default``: TRL's defaults (gradient checkpointing on);
- ``trl_no_checkpointing``: TRL with gradient checkpointing off.

TRL trains the vision encoder too (it freezes nothing by default); ``lit_dpo`` freezes it (``--model.freeze_vision``),
so their losses agree at the first step only; ``--train_vision`` makes lit_dpo train it as TRL does, for a like-for-like
comparison of the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SYSTEMS = ("lit_dpo", "lit_dpo_padded", "trl_default", "trl_no_checkpointing")
WORDS = "the a cat dog sat ran on mat big small red blue yes no is it what why answer question good bad".split()


def build(root: Path, args: argparse.Namespace) -> None:
    """The random model and its processor (``root/model``), and the rows with their images (``root/rows.jsonl``)."""
    from PIL import Image

    if args.family == "qwen2_vl":
        model, processor = _tests().make_qwen_vlm(0, args.hidden, args.layers, args.patch, side=2 * args.tile)
    else:
        model, processor = _tests().make_vlm(0, args.hidden, args.layers, args.tile, args.patch)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    rng = random.Random(0)
    (root / "images").mkdir()
    rows = []
    for i in range(args.batch * (args.steps + args.warmup)):
        size = (args.tile * rng.randint(1, 2), args.tile * rng.randint(1, 2))
        pixels = bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3))
        Image.frombytes("RGB", size, pixels).save(root / "images" / f"{i}.png")
        text = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text(12) + "?"}]}]
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": text(rng.randint(8, 40))}],
                     "rejected": [{"role": "assistant", "content": text(rng.randint(8, 40))}],
                     "images": [f"images/{i}.png"]})  # fmt: skip
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _tests() -> Any:
    """The tests' models, as plain functions; their Qwen2-VL processor made loadable in this process."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import conftest

    conftest.register_image_only_processor()
    return conftest


def run_lit_dpo(root: Path, args: argparse.Namespace, padded: bool) -> tuple[list[float], list[float]]:
    import lightning as L

    from lit_dpo.data import PreferenceDataModule
    from lit_dpo.module import DPOModule

    stamps, losses = [], []

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *_: Any) -> None:
            stamps.append(time.perf_counter())
            losses.append(outputs["loss"].item())

    L.seed_everything(0)
    module = DPOModule(model_name_or_path=str(root / "model"), learning_rate=args.lr, warmup_steps=0,
                       precompute_ref_log_probs=False, freeze_vision=not args.train_vision)  # fmt: skip
    data = PreferenceDataModule(path=str(root / "rows.jsonl"), val_split=0, batch_size=args.batch, shuffle=False,
                                max_length=4096, prefix_sharing=not padded, pack_length=0,
                                cache_dir=str(root / "cache"))  # fmt: skip
    trainer = L.Trainer(max_steps=args.steps + args.warmup, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Clock()], limit_val_batches=0)  # fmt: skip
    trainer.fit(module, datamodule=data)
    return stamps, losses


def run_trl(root: Path, args: argparse.Namespace, checkpointing: bool) -> tuple[list[float], list[float]]:
    import trl
    from datasets import Dataset
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

    stamps, losses = [], []
    compute_loss = trl.DPOTrainer.compute_loss

    def recorded_loss(trainer: Any, model: Any, *a: Any, **k: Any) -> Any:
        out = compute_loss(trainer, model, *a, **k)
        losses.append((out[0] if isinstance(out, tuple) else out).item())
        return out

    trl.DPOTrainer.compute_loss = recorded_loss

    class Clock(TrainerCallback):
        def on_step_end(self, *_: object, **__: object) -> None:
            stamps.append(time.perf_counter())

    rows = [json.loads(line) for line in (root / "rows.jsonl").read_text().splitlines()]
    for row in rows:  # TRL's vision format holds PIL images
        row["images"] = [Image.open(root / path).convert("RGB") for path in row["images"]]
    config = trl.DPOConfig(
        output_dir=tempfile.mkdtemp(), report_to="none", use_cpu=True, bf16=False, seed=0,
        per_device_train_batch_size=args.batch, max_steps=args.steps + args.warmup, learning_rate=args.lr,
        max_length=None, save_strategy="no", logging_steps=1000, lr_scheduler_type="constant",
        train_sampling_strategy="sequential", max_grad_norm=0.0, gradient_checkpointing=checkpointing,
    )  # fmt: skip
    trainer = trl.DPOTrainer(model=AutoModelForImageTextToText.from_pretrained(root / "model"), args=config,
                             train_dataset=Dataset.from_list(rows), callbacks=[Clock()],
                             processing_class=AutoProcessor.from_pretrained(root / "model"))  # fmt: skip
    trainer.train()
    return stamps, losses


def worker(args: argparse.Namespace) -> None:
    root = Path(args.root)
    _tests()
    if args.worker.startswith("lit_dpo"):
        stamps, losses = run_lit_dpo(root, args, padded=args.worker == "lit_dpo_padded")
    else:
        stamps, losses = run_trl(root, args, checkpointing=args.worker == "trl_default")
    timed = stamps[args.warmup - 1 :] if args.warmup else stamps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result = {"seconds_per_step": (timed[-1] - timed[0]) / (len(timed) - 1), "peak_rss_gib": peak, "losses": losses}
    print(json.dumps(result))


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=4, help="pairs per step")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the vision and language models")
    parser.add_argument("--layers", type=int, default=4, help="layers of each")
    parser.add_argument("--tile", type=int, default=224, help="pixels of an image tile (the vision encoder's input)")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--family", choices=("idefics3", "qwen2_vl"), default="idefics3")
    parser.add_argument("--train_vision", action="store_true", help="lit_dpo trains the vision encoder, as TRL does")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = arguments().parse_args()
    if args.worker:
        return worker(args)
    root = Path(tempfile.mkdtemp(prefix="lit_dpo_vlm_"))
    build(root, args)
    results = {}
    for system in args.systems:
        command = [sys.executable, __file__, "--worker", system, "--root", str(root)]
        command += [f"--{k}={getattr(args, k)}" for k in ("steps", "warmup", "batch", "hidden", "layers", "tile",
                                                           "patch", "lr", "family")]  # fmt: skip
        command += ["--train_vision"] if args.train_vision else []
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"PYTHONWARNINGS": "ignore"})
        if done.returncode:
            sys.exit(f"{system} failed:\n{done.stderr[-3000:]}")
        results[system] = json.loads(done.stdout.strip().splitlines()[-1])
    family = {"idefics3": "Idefics3", "qwen2_vl": "Qwen2-VL"}[args.family]
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, fp32; {family} random, "
          f"{args.layers} layers, hidden {args.hidden}, {args.tile}px tiles, patch {args.patch}; {args.batch} pairs/step, {args.steps} "
          f"timed steps after {args.warmup}{', vision trained' if args.train_vision else ''}")  # fmt: skip
    first = results[args.systems[0]]
    print(f"{'system':22s} {'s/step':>8s} {'peak RSS GiB':>13s} {'first loss':>11s} {'loss diff':>10s}")
    for system, r in results.items():
        diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(r["losses"], first["losses"]))
        print(
            f"{system:22s} {r['seconds_per_step']:8.3f} {r['peak_rss_gib']:13.2f} {r['losses'][0]:11.6f} {diff:10.1e}"
        )
    print("# loss diff: the largest relative difference from the first system's loss, over every step")
    for system in (s for s in results if s.startswith("trl")):
        for mine in (s for s in results if s.startswith("lit_dpo")):
            ratio = results[system]["seconds_per_step"] / results[mine]["seconds_per_step"]
            memory = results[mine]["peak_rss_gib"] / results[system]["peak_rss_gib"]
            print(f"{mine} / {system}: {ratio:.2f}x speed, {memory:.2f}x peak RSS")


if __name__ == "__main__":
    main()
