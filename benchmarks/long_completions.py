"""Chunked LM-head log-probs against the plain path on long completions: step time and peak RSS.

    python benchmarks/long_completions.py                # SmolLM2-135M-Instruct, fp32, 4 pairs a step
    python benchmarks/long_completions.py --words 100 300

Each (length, path) trains in its own process on 12 synthetic chat pairs whose chosen and rejected answers are
``--words`` random words (about 1.3 tokens each), 3 steps; time is steps 2-3. The plain path is forced by a
chunk larger than any batch (``LIT_DPO_CHUNK_ELEMENTS``); the chunked path is lit_dpo's default, which chunks
when the scored positions' logits exceed 4 chunks of 2**24 elements (SmolLM2: 1,365 positions).
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

WORDS = "the a cat dog runs fast slow over under house tree river mountain sky blue green red happy sad".split()


def _rows(words: int) -> list[dict]:
    rng = random.Random(0)

    def answer() -> list[dict]:
        return [{"role": "assistant", "content": " ".join(rng.choice(WORDS) for _ in range(words))}]

    prompt = [{"role": "user", "content": "Tell me a long story."}]
    return [{"prompt": prompt, "chosen": answer(), "rejected": answer()} for _ in range(12)]


def worker(args: argparse.Namespace) -> None:
    import lightning as L

    from lit_dpo.data import PreferenceDataModule
    from lit_dpo.module import DPOModule

    path = Path(tempfile.mkdtemp()) / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(args.worker)))
    stamps: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_end(self, *_: object) -> None:
            stamps.append(time.perf_counter())

    L.seed_everything(0)
    module = DPOModule(model_name_or_path=args.model, warmup_steps=0)
    data = PreferenceDataModule(path=str(path), val_split=0, batch_size=4, shuffle=False,
                                tokenizer_name_or_path=args.model, max_length=4096)  # fmt: skip
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[Clock()],
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(module, datamodule=data)
    tokens = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in data.train_examples) / len(data.train_examples)
    print(json.dumps({"step_s": (stamps[-1] - stamps[0]) / 2, "completion_tokens": tokens,
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:SmolLM2-135M-Instruct")
    parser.add_argument("--words", type=int, nargs="+", default=[100, 200, 300])
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, fp32, {args.model}, 4 pairs")
    print(f"{'words':>6s} {'tokens/pair':>11s} {'path':>8s} {'step s':>7s} {'peak RSS GiB':>13s}")
    for words in args.words:
        for path, chunk in (("plain", str(2**62)), ("chunked", None)):
            env = os.environ | {"PYTHONWARNINGS": "ignore"} | ({"LIT_DPO_CHUNK_ELEMENTS": chunk} if chunk else {})
            command = [sys.executable, __file__, "--worker", str(words), "--model", args.model]
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode:
                sys.exit(f"{words} words, {path} failed:\n{done.stderr[-3000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{words:6d} {r['completion_tokens']:11.0f} {path:>8s} {r['step_s']:7.2f} {r['peak_rss_gib']:13.2f}")


if __name__ == "__main__":
    main()
