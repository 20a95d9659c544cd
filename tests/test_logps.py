import torch

from lit_dpo.logps import sequence_logps


def test_sequence_logps_matches_log_softmax():
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
