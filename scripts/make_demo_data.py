"""Generate lit_dpo's demo preference set: short, correct, direct answers over the model's own answers.

The rejected answer is what SmolLM2-135M-Instruct itself says, greedily decoded (on-policy, so DPO moves
what the model actually generates), often rambling or wrong; the chosen one is a one-sentence correct answer. Questions come from a
seeded generator and greedy decoding is deterministic, so reruns give the same files. Train and val use
disjoint questions: val accuracy measures the learned style, not memorised pairs. After training, answers
are visibly shorter and more direct (``scripts/compare_generations.py``).

    python scripts/make_demo_data.py [--train 160] [--val 64]   # ~2 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Germany": "Berlin",
    "Canada": "Ottawa",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Austria": "Vienna",
    "Ireland": "Dublin",
    "Poland": "Warsaw",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Chile": "Santiago",
    "Cuba": "Havana",
    "Russia": "Moscow",
    "China": "Beijing",
    "India": "New Delhi",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Argentina": "Buenos Aires",
    "Mexico": "Mexico City",
    "Hungary": "Budapest",
    "Belgium": "Brussels",
    "Turkey": "Ankara",
    "Iran": "Tehran",
    "Iraq": "Baghdad",
    "Morocco": "Rabat",
    "Ghana": "Accra",
    "Nigeria": "Abuja",
    "Colombia": "Bogota",
    "Venezuela": "Caracas",
    "Israel": "Jerusalem",
    "Australia": "Canberra",
    "Iceland": "Reykjavik",
}
OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "fast": "slow",
    "up": "down",
    "happy": "sad",
    "light": "dark",
    "early": "late",
    "open": "closed",
    "full": "empty",
    "strong": "weak",
    "old": "young",
    "wet": "dry",
    "loud": "quiet",
    "hard": "soft",
    "rich": "poor",
    "high": "low",
    "thick": "thin",
    "clean": "dirty",
}
COLORS = {
    "a banana": "yellow",
    "grass": "green",
    "the sky on a clear day": "blue",
    "snow": "white",
    "coal": "black",
    "a ripe tomato": "red",
    "an orange": "orange",
    "a lemon": "yellow",
    "a flamingo": "pink",
    "chocolate": "brown",
    "a polar bear": "white",
    "a crow": "black",
}
ANIMALS = {
    "cow": "moo",
    "dog": "woof",
    "cat": "meow",
    "duck": "quack",
    "sheep": "baa",
    "owl": "hoot",
    "lion": "roar",
    "pig": "oink",
    "horse": "neigh",
    "frog": "ribbit",
}


def _facts(rng: random.Random) -> list[tuple[str, str]]:
    """(question, concise answer) pairs from every topic, shuffled."""
    facts = [(f"What is the capital of {k}?", f"The capital of {k} is {v}.") for k, v in CAPITALS.items()]
    facts += [(f"What is the opposite of {k}?", f"The opposite of {k} is {v}.") for k, v in OPPOSITES.items()]
    facts += [(f"What color is {k}?", f"{k[0].upper() + k[1:]} is {v}.") for k, v in COLORS.items()]
    facts += [(f"What sound does a {k} make?", f"A {k} says {v}.") for k, v in ANIMALS.items()]
    for a, b in [(rng.randint(2, 60), rng.randint(2, 40)) for _ in range(120)]:
        facts.append((f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
        facts.append((f"What is {a} times {b % 12 + 1}?", f"{a} times {b % 12 + 1} is {a * (b % 12 + 1)}."))
    unique = list(dict(facts).items())  # one answer per question
    rng.shuffle(unique)
    return unique


def _model_answers(questions: list[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy answers of the bundled SmolLM2-135M-Instruct, batched with left padding."""
    from transformers import AutoModelForCausalLM

    from lit_dpo.hf import BUNDLED, load_tokenizer, resolve

    tokenizer = load_tokenizer(BUNDLED)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(resolve(BUNDLED)).eval()
    answers = []
    for start in range(0, len(questions), batch_size):
        chats = [[{"role": "user", "content": q}] for q in questions[start : start + batch_size]]
        texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        answers += [a.strip() for a in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        print(f"generated {len(answers)}/{len(questions)}", flush=True)
    return answers


def _row(question: str, chosen: str, rejected: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=160)
    parser.add_argument("--val", type=int, default=64)
    parser.add_argument("--max_new_tokens", type=int, default=40, help="length cap of the model's own answers")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "lit_dpo" / "demo"))
    args = parser.parse_args()
    rng = random.Random(0)
    facts = _facts(rng)
    if args.train + args.val > len(facts):
        parser.error(f"only {len(facts)} distinct questions")
    facts = facts[: round((args.val + args.train) * 1.15)]  # spare questions: some answers equal the chosen one
    rejected = _model_answers([q for q, _ in facts], args.max_new_tokens)
    rows = [_row(q, a, r) for (q, a), r in zip(facts, rejected) if r and r != a]  # a pair needs two answers
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if len(rows) < args.val + args.train:
        parser.error(f"only {len(rows)} usable pairs")
    for name, chunk in (("val", rows[: args.val]), ("train", rows[args.val : args.val + args.train])):
        with (out / f"{name}.jsonl").open("w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in chunk)
        print(f"wrote {len(chunk)} pairs to {out / name}.jsonl")


if __name__ == "__main__":
    main()
