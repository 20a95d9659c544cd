"""lit_dpo/scoring/blocked.py: packed rows' attention example by example gives sdpa's scores and gradients."""

import torch

from lit_dpo.scoring import blocked
from lit_dpo.scoring.blocked import BLOCKED_SDPA, RowBlocks, row_blocks, use_blocked_attention
from lit_dpo.scoring.forward import score_sequences


def test_row_blocks_are_the_runs_of_one_example():
    segments = torch.tensor([[0, 0, 1, 2, 4, 5, 6, -1], [8, 9, 9, 10, -1, -1, -1, -1]])  # example * 4 + kind
    assert row_blocks(segments) == [RowBlocks(0, [4, 3, 1]), RowBlocks(0, [4, 4])]
    assert row_blocks(torch.tensor([[0, 1, 2, 2]])) is None  # one example a row: nothing to split
    shared = torch.tensor([[-8, -8, 0, 1, 2, 4, 5, -1]])  # a shared prompt start of 2 tokens, then 2 examples
    assert row_blocks(shared) == [RowBlocks(2, [3, 2, 1])]


def _scores_and_grads(policy, batch):
    policy.zero_grad()
    scores = score_sequences(policy, batch)
    scores.logps.sum().backward()
    return scores, {n: p.grad.clone() for n, p in policy.named_parameters()}


def test_packed_rows_score_as_sdpa_with_the_same_gradients(dpo_module, tiny_model_dir, make_batch, standard_rows,
                                                           monkeypatch):  # fmt: skip
    module = dpo_module(model_name_or_path=tiny_model_dir)
    policy = module.policy
    assert policy.config._attn_implementation == BLOCKED_SDPA  # a CPU's default
    assert policy.config.num_key_value_heads < policy.config.num_attention_heads  # grouped keys, not repeated
    batch = make_batch(standard_rows(7), "packed")
    lengths, attention = [], blocked.scaled_dot_product_attention
    monkeypatch.setattr(blocked, "scaled_dot_product_attention", lambda q, k, *a, **kw: lengths.append(q.shape[2])
                        or attention(q, k, *a, **kw))  # fmt: skip
    got, got_grads = _scores_and_grads(policy, batch)
    runs = row_blocks(batch.segments)
    # example by example, the shared prompt start on its own
    assert lengths == [
        n for _ in policy.model.layers for row in runs for n in [row.shared] * bool(row.shared) + row.sizes
    ]
    examples = [set(row.div(4, rounding_mode="floor").tolist()) - {-1, -2} for row in batch.segments]
    assert max(map(len, examples)) > 1 and (batch.segments == -1).any()  # several examples a row, and padding
    assert all(row.shared > 0 for row in runs)  # "what is ...": every row's prompts start alike

    policy.set_attn_implementation("sdpa")
    want, want_grads = _scores_and_grads(policy, batch)
    for g, w in zip(got[:3], want[:3]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        padded = score_sequences(policy, make_batch(standard_rows(7), "padded"))
    torch.testing.assert_close(got.logps, padded.logps, rtol=1e-5, atol=1e-5)


def test_only_a_cpu_s_sdpa_switches(random_llama):
    model = random_llama(64, 0)
    assert not use_blocked_attention(model, torch.device("cuda"))
    model.set_attn_implementation("eager")
    assert not use_blocked_attention(model, torch.device("cpu"))
    model.set_attn_implementation("sdpa")
    assert not use_blocked_attention(model, torch.device("cpu"), compiled=True)  # compiled layers keep sdpa
    assert use_blocked_attention(model, torch.device("cpu"))
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)  # no runs: sdpa itself
    model.set_attn_implementation("sdpa")
    assert torch.equal(out, model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False))
