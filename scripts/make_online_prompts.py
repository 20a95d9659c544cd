"""Generate the prompts of lit_dpo's online demo: simple questions with a checkable ``answer`` (sums of two
one-digit numbers, capitals), which SmolLM2-135M-Instruct answers right some of the time when sampling, so a
round's samples disagree and pair up under ``exact_answer``. Train and held-out questions are disjoint; a
seeded generator makes reruns give the same files.

    python scripts/make_online_prompts.py [--train 48] [--val 16]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_demo_data import CAPITALS  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "lit_dpo" / "data" / "demo"


def questions(rng: random.Random) -> list[tuple[str, str]]:
    """Every question, shuffled: two sums for each capital question."""
    sums = [(f"What is {a} plus {b}?", str(a + b)) for a in range(1, 10) for b in range(1, 10)]
    capitals = [(f"What is the capital of {country}?", city) for country, city in CAPITALS.items()]
    rng.shuffle(sums)
    rng.shuffle(capitals)
    mixed = [item for i in range(len(capitals)) for item in (sums[2 * i], sums[2 * i + 1], capitals[i])]
    return mixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--val", type=int, default=16)
    args = parser.parse_args()
    items = questions(random.Random(0))
    if args.train + args.val > len(items):
        raise SystemExit(f"only {len(items)} questions")
    for name, part in (("prompts", items[: args.train]), ("val_prompts", items[args.train : args.train + args.val])):
        rows = [{"prompt": [{"role": "user", "content": q}], "answer": a} for q, a in part]
        (DEMO / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{DEMO / name}.jsonl: {len(rows)} prompts")


if __name__ == "__main__":
    main()
