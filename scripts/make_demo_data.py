"""Generate lit_dpo's demo preference set: concise answers (chosen) vs rambling ones (rejected).

Deterministic (fixed seed); writes conversational rows to ``lit_dpo/demo/{train,val}.jsonl``. Train and
val use disjoint questions, so val accuracy measures the learned style, not memorised pairs. After DPO on
it, the model's answers get shorter and lose the filler: the preference is visible in generations.

    python scripts/make_demo_data.py [--train 160] [--val 64]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

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

OPENERS = [
    "Oh, what a great question! I really love being asked things like this.",
    "Well, that is a very interesting thing to wonder about, so let me think it through.",
    "Great question! There is honestly a lot that could be said here, but let me try.",
    "Hmm, okay, so this is something many people ask about, and it is worth explaining.",
    "Thanks so much for asking! Let me take a moment to walk you through it.",
    "Ah, I see what you are asking, and I am happy to go into it in some detail.",
]
BRIDGES = [
    "Anyway, to finally get to the point,",
    "So, after all that,",
    "Basically, when you think about it,",
    "Long story short,",
    "To cut a long story a bit shorter,",
    "In the end,",
]
CLOSERS = [
    "I hope this long explanation helped, and feel free to ask me anything else!",
    "Let me know if you would like me to explain any of this in even more detail!",
    "I hope that makes sense, and please do not hesitate to ask more questions!",
    "There is a lot more I could say, so just ask if you are curious about anything!",
    "Isn't that fascinating? I could honestly talk about this all day long!",
]


def _facts(rng: random.Random) -> list[tuple[str, str]]:
    """(question, concise answer) pairs from every topic, shuffled."""
    facts = [(f"What is the capital of {k}?", f"{v}.") for k, v in CAPITALS.items()]
    facts += [(f"What is the opposite of {k}?", f"{v.capitalize()}.") for k, v in OPPOSITES.items()]
    facts += [(f"What color is {k}?", f"{v.capitalize()}.") for k, v in COLORS.items()]
    facts += [(f"What sound does a {k} make?", f"A {k} says {v}.") for k, v in ANIMALS.items()]
    for a, b in [(rng.randint(2, 60), rng.randint(2, 40)) for _ in range(120)]:
        facts.append((f"What is {a} plus {b}?", f"{a + b}."))
        facts.append((f"What is {a} times {b % 12 + 1}?", f"{a * (b % 12 + 1)}."))
    unique = list(dict(facts).items())  # one answer per question
    rng.shuffle(unique)
    return unique


def _row(question: str, answer: str, rng: random.Random) -> dict:
    rambling = f"{rng.choice(OPENERS)} Anyway, the answer is {answer} {rng.choice(CLOSERS)}"
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": answer}],
        "rejected": [{"role": "assistant", "content": rambling}],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=160)
    parser.add_argument("--val", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "lit_dpo" / "demo"))
    args = parser.parse_args()
    rng = random.Random(0)
    facts = _facts(rng)
    if args.train + args.val > len(facts):
        parser.error(f"only {len(facts)} distinct questions")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, chunk in (("val", facts[: args.val]), ("train", facts[args.val : args.val + args.train])):
        with (out / f"{name}.jsonl").open("w") as handle:
            for question, answer in chunk:
                handle.write(json.dumps(_row(question, answer, rng)) + "\n")
        print(f"wrote {len(chunk)} pairs to {out / name}.jsonl")


if __name__ == "__main__":
    main()
