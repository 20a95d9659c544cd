"""lit_dpo/generation.py: batched, left-padded generation that stops at EOS and leaves the training RNG alone."""

import torch

from lit_dpo.generation import Sampling, generate, until_eos


def test_batched_greedy_generation_equals_one_prompt_at_a_time(random_llama, tokenizer):
    model = random_llama(len(tokenizer), 0)
    prompts = [tokenizer("the cat sat")["input_ids"], tokenizer("a dog")["input_ids"], [5]]
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    together = generate(model, prompts, Sampling(max_new_tokens=6), pad, eos, batch_size=3)
    alone = [generate(model, [p], Sampling(max_new_tokens=6), pad, eos)[0] for p in prompts]
    assert together == alone and all(1 <= len(answer) <= 6 for answer in together)


def test_sampling_is_seeded_and_leaves_the_global_rng_as_it_was(random_llama, tokenizer):
    model = random_llama(len(tokenizer), 0)
    sampling = Sampling(max_new_tokens=8, do_sample=True, temperature=1.5)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = generate(model, [[5, 6]], sampling, tokenizer.pad_token_id, None, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert generate(model, [[5, 6]], sampling, tokenizer.pad_token_id, None, seed=7) == first


def test_until_eos_keeps_the_eos_and_drops_what_follows():
    assert until_eos([4, 5, 2, 7, 0], eos=2, pad=0) == [4, 5, 2]
    assert until_eos([4, 5, 0, 0], eos=2, pad=0) == [4, 5]
