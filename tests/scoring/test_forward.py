"""lit_dpo/scoring/forward.py: per-sequence sums, LD-DPO and WPO weights by hand, and both attentions."""

import math

import torch

from lit_dpo.scoring import score_sequences
from lit_dpo.scoring.forward import length_desensitized_weights, mean_per_sequence
from lit_dpo.scoring.lm_head import token_scores


def test_sequence_logps_oracle_matches_log_softmax(sequence_logps):
    """The oracle other tests check lit_dpo against, checked itself against a loop."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 5))
    labels[:, :2] = -100  # prompt
    labels[2, 4] = -100  # padding
    logprobs = logits.log_softmax(-1)
    expected = torch.stack(
        [sum(logprobs[b, t - 1, labels[b, t]] for t in range(1, 5) if labels[b, t] != -100) for b in range(3)]
    )
    torch.testing.assert_close(sequence_logps(logits, labels), expected)
    torch.testing.assert_close(sequence_logps(logits, labels, average=True), expected / torch.tensor([3, 3, 2]))


def test_length_desensitized_weights_by_hand():
    # 2 pairs: chosen 0 has 3 tokens, chosen 1 has 1; rejected 0 has 2, rejected 1 has 4 (sequences 2, 3)
    # shared lengths min(3, 2) = 2 and min(1, 4) = 1; tokens past them weigh alpha
    seq = torch.tensor([0, 0, 0, 2, 2, 1, 3, 3, 3, 3])
    got = length_desensitized_weights(seq, 2, 0.5)
    assert got.tolist() == [1, 1, 0.5, 1, 1, 1, 1, 0.5, 0.5, 0.5]


def test_wpo_means_by_hand():
    # p = [3/4, 1/4]: sum p^2 = 5/8; log p - log sum p^2 = log(6/5) for token 0, log(2/5) for token 1
    logits = torch.tensor([[math.log(3), 0.0]] * 3)
    terms = token_scores(logits, torch.tensor([0, 1, 1]), wpo=True).wpo
    got = mean_per_sequence(terms, torch.tensor([0, 0, 1]), 2)
    expected = [(math.log(1.2) + math.log(0.4)) / 2, math.log(0.4)]
    torch.testing.assert_close(got, torch.tensor(expected))


def test_shared_prefix_masks_work_with_sdpa_eager_and_flex(dpo_module, tiny_model_dir, make_batch, standard_rows):
    module = dpo_module(model_name_or_path=tiny_model_dir)
    rows = standard_rows(5)
    shared, padded = make_batch(rows, "shared"), make_batch(rows, "padded")
    # flex compiled for another test's shapes would recompile with dynamic shapes here, and PyTorch 2.13's CPU
    # template for that fails to build (``cur_kvSplitSize8`` undeclared): start from fresh compilations
    torch._dynamo.reset()
    with torch.no_grad():
        expected = score_sequences(module.policy, padded)
        for attention in ("sdpa", "eager", "flex_attention"):
            module.policy.set_attn_implementation(attention)
            for got, want in zip(score_sequences(module.policy, shared)[:3], expected[:3]):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
