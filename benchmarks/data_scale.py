"""Data at scale: the start of a run on N rows, lit_dpo against the ecosystem's way, side by side in one run.

    python benchmarks/data_scale.py                      # 100k and 1M rows (about 25 minutes on 2 cores)
    python benchmarks/data_scale.py --rows 20000         # a quick look

Rows are raw hh-rlhf-style pairs (``chosen`` and ``rejected`` dialogues sharing their ``Human:``/``Assistant:``
turns, ~1.4 KB a row as in Anthropic/hh-rlhf), 5,000 distinct ones repeated to N rows. Each measurement is a fresh
process, timed from its start (imports included) to its examples being ready, with the peak RSS of its largest
process (workers included):

- ``lit_dpo first start``: ``PreferenceDataModule.setup`` on an empty cache: read, validate, tokenize with
  SmolLM2's tokenizer into the memory-mapped store (``--data.num_proc`` default), hold out 5%.
- ``lit_dpo second start``: the same on the filled cache (what every later start and resume does).
- ``lit_dpo streaming``: ``--data.streaming=true`` (windows of 10,000 rows): from the start to 100 batches of 4
  pairs collated, and the same resumed from the last window's position (what a resume near the end of the data
  does: the file is read from the window's byte offset).
- ``datasets + map``: ``datasets.load_dataset("json")`` on an empty cache, TRL's ``extract_prompt`` and a batched
  tokenizer ``map`` of prompt, chosen and rejected, single process (as TRL runs it by default), and with as many
  processes as lit_dpo used (``num_proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DISTINCT = 5000
VOCAB = ("the a to of and you it is that in for I can what how this be would people some help think good about "
         "really could like know want don't question answer money house dog cat water food work time day night "
         "friend family").split()  # fmt: skip


def hh_rows(path: Path, n: int, seed: int = 0) -> None:
    """``n`` raw hh-rlhf-style rows (``DISTINCT`` distinct ones, repeated) as a JSONL file."""
    rng = random.Random(seed)

    def text(low: int, high: int) -> str:
        words = " ".join(rng.choice(VOCAB) for _ in range(rng.randint(low, high)))
        return words[0].upper() + words[1:] + rng.choice(".?!")

    lines = []
    for _ in range(DISTINCT):
        turns = "".join(f"\n\nHuman: {text(8, 40)}\n\nAssistant: {text(10, 60)}" for _ in range(rng.randint(0, 2)))
        prompt = turns + f"\n\nHuman: {text(8, 40)}\n\nAssistant:"
        row = {"chosen": f"{prompt} {text(10, 80)}", "rejected": f"{prompt} {text(10, 80)}"}
        lines.append(json.dumps(row) + "\n")
    with path.open("w") as handle:
        for i in range(n):
            handle.write(lines[i % DISTINCT])


def lit_dpo_start(path: str, cache: str) -> dict:
    from lit_dpo.data import PreferenceDataModule
    from lit_dpo.data.chunks import default_num_proc

    data = PreferenceDataModule(path=path, cache_dir=cache)
    data.setup("fit")
    data.fingerprint()  # what a fit's start computes too
    return {"examples": len(data.train_examples) + len(data.val_examples), "num_proc": default_num_proc()}


def lit_dpo_stream(path: str, cache: str, resume: str) -> dict:
    from itertools import islice

    from lit_dpo.data import PreferenceDataModule

    data = PreferenceDataModule(path=path, cache_dir=cache, streaming=True, val_split=0)
    data.setup("fit")
    loader = data.train_dataloader()
    if resume:  # the loader's own state with the stream's put in
        loader.load_state_dict(loader.state_dict() | {"dataset_state": json.loads(resume)})
    batches = list(islice(loader, 100))
    return {"examples": sum(len(b.weights) for b in batches), "fingerprint": data.fingerprint()}


def last_window_state(path: Path, window: int = 10_000) -> dict:
    """A stream's state at the start of the file's last window (its byte offset found by reading it)."""
    offsets = [0]
    with path.open("rb") as handle:
        for line in handle:
            offsets.append(offsets[-1] + len(line))
    number = (len(offsets) - 2) // window
    start = {"records": number * window, "offset": offsets[number * window], "hf_state": None, "done": False}
    return {"epoch": 0, "window": number, "starts": [start], "taken": 0}


def datasets_map(path: str, cache: str, num_proc: int) -> dict:
    import datasets

    from lit_dpo.hf import BUNDLED, load_tokenizer

    datasets.disable_progress_bars()
    tokenizer = load_tokenizer(BUNDLED)

    def extract_prompt(row: dict) -> dict:  # TRL's extract_prompt for string rows
        chosen, rejected = row["chosen"], row["rejected"]
        for i in range(min(len(chosen), len(rejected))):
            if chosen[i] != rejected[i]:
                i -= chosen[i - 1] == " "
                break
        return {"prompt": chosen[:i], "chosen": chosen[i:], "rejected": rejected[i:]}

    def tokenize(batch: dict) -> dict:
        eos = tokenizer.eos_token
        return {
            "prompt_input_ids": tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"],
            "chosen_input_ids": tokenizer([c + eos for c in batch["chosen"]], add_special_tokens=False)["input_ids"],
            "rejected_input_ids": tokenizer([r + eos for r in batch["rejected"]], add_special_tokens=False)["input_ids"],
        }  # fmt: skip

    processes = num_proc if num_proc > 1 else None
    rows = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache)
    rows = rows.map(extract_prompt, num_proc=processes)
    rows = rows.map(tokenize, batched=True, num_proc=processes, remove_columns=["prompt", "chosen", "rejected"])
    return {"examples": len(rows), "num_proc": num_proc}


def worker(args: argparse.Namespace) -> None:
    if args.system == "datasets":
        out = datasets_map(args.path, args.cache, args.num_proc)
    elif args.system == "stream":
        out = lit_dpo_stream(args.path, args.cache, args.resume)
    else:
        out = lit_dpo_start(args.path, args.cache)
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    out["peak_rss_mb"] = peak / 1024
    print("RESULT " + json.dumps(out))


def measure(system: str, path: Path, cache: Path, num_proc: int = 1, resume: str = "") -> dict:
    command = [sys.executable, __file__, "--worker", system, "--path", str(path), "--cache", str(cache),
               "--num_proc", str(num_proc), "--resume", resume]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{system} failed:\n{done.stderr[-3000:]}")
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    result["seconds"] = time.perf_counter() - started  # the whole process: start-up and imports included
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", default=None, help="where the rows and caches go (default: a temporary folder)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--num_proc", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--resume", default="", help=argparse.SUPPRESS)
    parser.add_argument("--streaming_only", action="store_true", help="only the streaming columns")
    args = parser.parse_args()
    if args.worker:
        args.system = args.worker
        return worker(args)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="lit_dpo_data_scale_"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")  # fmt: skip
    shown = lambda r: f"{r['seconds']:.1f} s, {r['peak_rss_mb']:,.0f} MB"  # noqa: E731
    streamed = []
    if not args.streaming_only:
        print(
            "| rows (file) | lit_dpo first start | lit_dpo second start | datasets + map | datasets + map, num_proc |"
        )
        print("|---|---|---|---|---|")
    for n in args.rows:
        path = root / f"hh_{n}.jsonl"
        hh_rows(path, n)
        cache = root / f"cache_{n}"
        size = path.stat().st_size / 1e6
        start = measure("stream", path, cache / "stream")
        resumed = measure("stream", path, cache / "stream", resume=json.dumps(last_window_state(path)))
        assert start["examples"] == resumed["examples"] == 400 and start["fingerprint"] == resumed["fingerprint"]
        streamed.append(f"| {n:,} ({size:,.0f} MB) | {shown(start)} | {shown(resumed)} |")
        if args.streaming_only:
            path.unlink()
            continue
        first = measure("lit_dpo", path, cache / "lit_dpo")
        second = measure("lit_dpo", path, cache / "lit_dpo")
        single = measure("datasets", path, cache / "datasets_1", 1)
        parallel = measure("datasets", path, cache / f"datasets_{first['num_proc']}", first["num_proc"])
        print(f"| {n:,} ({size:,.0f} MB) | {shown(first)} | {shown(second)} | {shown(single)} | "
              f"{shown(parallel)} ({parallel['num_proc']}) |", flush=True)  # fmt: skip
        assert first["examples"] == second["examples"] == single["examples"] == n, (first, second, single)
        shutil.rmtree(cache)
        path.unlink()
    print("\n| rows (file) | lit_dpo streaming: start to 100 batches | the same, resumed at the last window |")
    print("|---|---|---|")
    print("\n".join(streamed))
    if args.workdir is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
