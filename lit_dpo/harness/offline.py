"""lit_dpo's offline general-ability task for lm-evaluation-harness, ``lit_dpo_arithmetic``: built by this script,
shipped in the package, so that the demo and the tests measure what DPO cost without the network.

Small-number arithmetic and comparisons as multiple choice (``acc``, ``acc_norm``), the skills a small instruct
model has before DPO and can lose. Rebuild the shipped rows (they are the script's output, seeded)::

    python -m lit_dpo.harness.offline            # writes lit_dpo/harness/tasks/lit_dpo_arithmetic.jsonl
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

NAME = "lit_dpo_arithmetic"
ROWS = Path(__file__).parent / "tasks" / f"{NAME}.jsonl"
SEED, SIZE = 0, 120

# lm-evaluation-harness's task config; dataset_kwargs.data_files is filled in with the rows' absolute path
CONFIG = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {rows}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def build_rows(size: int = SIZE, seed: int = SEED) -> list[dict]:
    """``size`` questions (sums, differences, the larger of two numbers), each with 4 choices (2 for comparisons)
    and the index of the right one."""
    rng = random.Random(seed)
    makers = (_sum, _difference, _larger)
    return [makers[i % len(makers)](rng) for i in range(size)]


def _choices(rng: random.Random, right: int) -> tuple[list[str], int]:
    wrong = rng.sample([right + d for d in (-3, -2, -1, 1, 2, 3, 10) if right + d >= 0], 3)
    options = sorted([right, *wrong])
    return [str(o) for o in options], options.index(right)


def _sum(rng: random.Random) -> dict:
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    choices, answer = _choices(rng, a + b)
    return {"question": f"What is {a} plus {b}?", "choices": choices, "answer": answer}


def _difference(rng: random.Random) -> dict:
    a, b = sorted((rng.randint(1, 30), rng.randint(1, 30)), reverse=True)
    choices, answer = _choices(rng, a - b)
    return {"question": f"What is {a} minus {b}?", "choices": choices, "answer": answer}


def _larger(rng: random.Random) -> dict:
    a, b = rng.sample(range(1, 100), 2)
    return {"question": f"Which number is larger, {a} or {b}?", "choices": [str(a), str(b)], "answer": int(b > a)}


def write_rows(path: Path = ROWS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in build_rows()))
    return path


def write_config(folder: Path) -> Path:
    """The task's YAML in ``folder`` (lm-evaluation-harness's ``include_path``), reading the shipped rows."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{NAME}.yaml"
    partial = folder / f"{NAME}.{os.getpid()}.partial"  # ranks write it at once: each renames a whole file in
    partial.write_text(CONFIG.format(name=NAME, rows=json.dumps(str(ROWS.resolve()))))
    os.replace(partial, config)
    return config


if __name__ == "__main__":
    print(write_rows(Path(sys.argv[1]) if len(sys.argv) > 1 else ROWS))
