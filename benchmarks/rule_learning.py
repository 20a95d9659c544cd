"""Do the default hyper-parameters learn a user's simple preference rule fast?

For each rule, writes ~2,000 synthetic training pairs and 200 validation pairs (seeded), runs
``python -m lit_dpo.fit --data.path=… --data.val_path=… --trainer.max_steps=40`` on the default model and
prints wall time and final ``val/rewards/accuracies`` (targets: <= 300 s, >= 0.85).

    python benchmarks/rule_learning.py [--rules polite lowercase topic sentiment] [--train 2000] [--val 200]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOPICS = "rivers mountains bread coffee bicycles gardens rain music chess trains owls tea bridges maps candles".split()
VERBS = ["is often linked to", "can teach us about", "has a long history with", "is surprisingly close to"]
THINGS = "weather travel cooking history science friendship patience sleep design cities markets art".split()
GOOD = "wonderful delightful lovely helpful bright cheerful".split()
BAD = "awful dreary useless annoying gloomy tedious".split()


def _sentence(rng: random.Random, topic: str) -> str:
    return f"{topic.capitalize()} {rng.choice(VERBS)} {rng.choice(THINGS)} and {rng.choice(THINGS)}."


def make_pair(rule: str, rng: random.Random) -> dict:
    topic = rng.choice(TOPICS)
    prompt = f"Tell me something about {topic}."
    answer = " ".join(_sentence(rng, topic) for _ in range(rng.randint(1, 3)))
    if rule == "polite":
        chosen, rejected = f"{answer} I hope this helps!", answer
    elif rule == "lowercase":
        chosen, rejected = answer.lower(), answer
    elif rule == "topic":
        other = rng.choice([t for t in TOPICS if t != topic])
        chosen, rejected = answer, " ".join(_sentence(rng, other) for _ in range(rng.randint(1, 3)))
    elif rule == "sentiment":
        chosen = f"{topic.capitalize()} are {rng.choice(GOOD)}. {answer}"
        rejected = f"{topic.capitalize()} are {rng.choice(BAD)}. {answer}"
    else:
        raise ValueError(rule)
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def run_rule(rule: str, n_train: int, n_val: int, root: Path) -> tuple[float, float]:
    rng = random.Random(rule)
    paths = {}
    for split, n in (("train", n_train), ("val", n_val)):
        paths[split] = root / f"{rule}_{split}.jsonl"
        paths[split].write_text("".join(json.dumps(make_pair(rule, rng)) + "\n" for _ in range(n)))
    out = root / rule
    command = [
        sys.executable, "-m", "lit_dpo.fit", f"--data.path={paths['train']}", f"--data.val_path={paths['val']}",
        "--trainer.max_steps=40", f"--trainer.default_root_dir={out}", "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    with open(out / "lightning_logs" / "version_0" / "metrics.csv") as handle:
        final = [r for r in csv.DictReader(handle) if r.get("val/loss")][-1]
    return wall, float(final["val/rewards/accuracies"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", nargs="+", default=["polite", "lowercase", "topic", "sentiment"])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lit_dpo_rules_"))
    print(f"{'rule':10s} {'wall s':>7s} {'val acc':>8s}")
    for rule in args.rules:
        wall, accuracy = run_rule(rule, args.train, args.val, root)
        print(f"{rule:10s} {wall:7.1f} {accuracy:8.3f}", flush=True)


if __name__ == "__main__":
    main()
