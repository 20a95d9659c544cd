"""Shared fixtures: a tiny random Llama with a tokenizer trained on the fly, and small preference files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = "the a cat dog sat ran on mat big small red blue yes no is it what why answer question good bad".split()


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (~300 tokens) with ChatML special tokens and template."""
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(12)) + " 0123456789 .,!?" for _ in range(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>", bos_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    return fast


def make_model(vocab_size: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two tiny Llama folders sharing one tokenizer: a policy and a *different* reference."""
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = make_tokenizer()
    paths = []
    for name, seed in (("policy", 0), ("reference", 1)):
        make_model(len(tokenizer), seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths.append(str(root / name))
    return paths[0], paths[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dirs: tuple[str, str]) -> str:
    return tiny_dirs[0]


def standard_rows(n: int, seed: int = 0) -> list[dict]:
    """Pairs with a simple rule: the chosen answer says 'yes', the rejected one 'no' and rambles."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = "what is " + " ".join(rng.choice(WORDS[:12]) for _ in range(rng.randint(2, 6))) + "?"
        chosen = " yes it is " + rng.choice(WORDS[:12])
        rejected = " no " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def chat_rows(n: int, seed: int = 0) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"].strip()}],
            "rejected": [{"role": "assistant", "content": r["rejected"].strip()}],
        }
        for r in standard_rows(n, seed)
    ]


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def lit_step_metrics(module, batch: dict) -> dict[str, float]:
    """lit_dpo's metrics over one batch: one ``_shared_step`` of ``module`` (already configured)."""
    from lit_dpo.metrics import PreferenceMetrics

    metrics = PreferenceMetrics()
    module._shared_step(batch, metrics)
    return {k: v.item() for k, v in metrics.compute().items()}


def trl_step_metrics(trainer, num_rows: int) -> tuple[float, dict[str, float]]:
    """A TRL trainer's loss and logged metrics over its first ``num_rows`` training rows as one batch."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(num_rows)])
    trainer.model.train()
    loss = trainer._compute_loss(trainer.model, batch, return_outputs=False)
    return loss.item(), {k: v[-1] for k, v in trainer._metrics["train"].items()}
