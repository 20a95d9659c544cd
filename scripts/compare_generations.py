"""Show what DPO changed: greedy answers of the starting model and a trained export to held-out prompts.

    python scripts/compare_generations.py runs/lightning_logs/version_0/hf_model [--n 5]

The first argument is the trained policy (an HF folder written by ``python -m lit_dpo.fit``); ``--base``
defaults to the bundled SmolLM2-135M-Instruct. Prompts come from the demo's validation set.
"""

from __future__ import annotations

import argparse
import json

import torch
from transformers import AutoModelForCausalLM

from lit_dpo.data import demo_path
from lit_dpo.hf import BUNDLED, load_tokenizer, resolve


def answer(model, tokenizer, messages: list[dict], max_new_tokens: int) -> str:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trained")
    parser.add_argument("--base", default=BUNDLED)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.trained)
    models = {
        name: AutoModelForCausalLM.from_pretrained(resolve(path))
        for name, path in (("before", args.base), ("after", args.trained))
    }
    with open(demo_path("val")) as handle:
        prompts = [json.loads(line)["prompt"] for line in handle][: args.n]
    lengths = {name: 0 for name in models}
    for messages in prompts:
        print(f"\n### {messages[-1]['content']}")
        for name, model in models.items():
            text = answer(model, tokenizer, messages, args.max_new_tokens)
            lengths[name] += len(tokenizer(text)["input_ids"])
            print(f"{name:>6}: {text}")
    print("\nmean answer length in tokens: " + ", ".join(f"{k} {v / len(prompts):.1f}" for k, v in lengths.items()))


if __name__ == "__main__":
    main()
