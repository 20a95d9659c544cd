"""Time per DPO step against sequence length and batch size, lit_dpo's layout vs TRL's padded one.

    python benchmarks/scaling.py            # SmolLM2-135M-Instruct, fp32: writes scaling.csv and scaling.png
    python benchmarks/scaling.py --tiny     # a 2-layer random Llama, seconds

Length sweep: 4 pairs per step, three of them short demo pairs and one whose rejected completion is made
``long_tokens`` long: the padded layout pays for 8 rows of the longest sequence, lit_dpo's packed shared-prefix
layout for the real tokens. Batch sweep: 1-8 demo pairs. Each point: one untimed step, then the mean of
``--repeats`` timed steps (forward, backward, AdamW), in one process (``matplotlib`` draws the plot).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from lit_dpo.data import Batch, PaddedCollator, Pair, SharedPrefixCollator, demo_path, read_rows, tokenize_row
from lit_dpo.hf import load_tokenizer
from lit_dpo.module import DPOModule

LAYOUTS = {"lit_dpo (shared prefix, packed)": "shared", "padded (TRL's layout)": "padded"}


def _step_seconds(module: DPOModule, optimizer: torch.optim.Optimizer, batch: Batch, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        loss = module.compute_loss(batch, module.train_metrics)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:  # the first step warms up allocations
            times.append(time.perf_counter() - start)
    return statistics.mean(times)


def _tokens(pairs: list[Pair]) -> tuple[int, int]:
    """Real tokens (prompt + completion, both sides) and the padded layout's (2B rows of the longest)."""
    real = sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    longest = max(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs)
    return real, 2 * len(pairs) * longest


def _points(pairs: list[Pair], filler: list[int]) -> list[tuple[str, int, int, list[Pair]]]:
    points = []
    for long_tokens in (32, 128, 256, 384):
        batch = [replace(p) for p in pairs[:4]]
        batch[0].rejected_ids = (filler * (long_tokens // len(filler) + 1))[:long_tokens]
        points.append(("length", 4, long_tokens, batch))
    for size in (1, 2, 4, 8):
        points.append(("batch", size, 0, pairs[:size]))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:SmolLM2-135M-Instruct")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/scaling")
    args = parser.parse_args()
    if args.tiny:
        from vs_trl import _tiny_model

        args.model = _tiny_model(Path(tempfile.mkdtemp()))
    tokenizer = load_tokenizer(args.model)
    pairs = [tokenize_row(tokenizer, r) for r in read_rows(demo_path("train"))[:8]]
    filler = pairs[0].rejected_ids[:-1]
    torch.manual_seed(0)
    module = DPOModule(model_name_or_path=args.model, learning_rate=1e-6)
    module.configure_model()
    optimizer = module.configure_optimizers()["optimizer"]
    rows = []
    for sweep, batch_size, long_tokens, batch_pairs in _points(pairs, filler):
        real, padded = _tokens(batch_pairs)
        for name, layout in LAYOUTS.items():
            collate = (
                SharedPrefixCollator(tokenizer.pad_token_id, pack_length=512)
                if layout == "shared"
                else PaddedCollator(tokenizer.pad_token_id)
            )
            seconds = _step_seconds(module, optimizer, collate(batch_pairs), args.repeats)
            rows.append({"sweep": sweep, "layout": name, "batch": batch_size, "long_tokens": long_tokens,
                         "real_tokens": real, "padded_tokens": padded, "seconds_per_step": round(seconds, 4)})  # fmt: skip
            print(rows[-1], flush=True)
    out = Path(args.out)
    with open(out.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot(rows, out.with_suffix(".png"), args.model)
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")


def _plot(rows: list[dict], path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, sweep, x, label in ((axes[0], "length", "long_tokens", "tokens of the one long rejected completion (4 pairs)"),
                                (axes[1], "batch", "batch", "pairs per step")):  # fmt: skip
        for name in LAYOUTS:
            points = [r for r in rows if r["sweep"] == sweep and r["layout"] == name]
            ax.plot([r[x] for r in points], [r["seconds_per_step"] for r in points], marker="o", label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("seconds per step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"DPO step time, {Path(model).name}, fp32, {torch.get_num_threads()} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
