"""lit_dpo/scoring/logps.py: one batch's scores as per-pair (or per-example) tensors."""

from types import SimpleNamespace

import torch

from lit_dpo.scoring.forward import SequenceScores
from lit_dpo.scoring.logps import PairLogps, UnpairedLogps, split_scores


def test_pairs_split_first_completions_from_second_and_keep_the_prompts():
    #                      chosen        rejected      prompts
    logps = torch.tensor([-1.0, -2.0, -3.0, -4.0, -0.5, -0.25])
    tokens = torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    scores = SequenceScores(logps, tokens, torch.zeros(6))
    lp = split_scores(scores, torch.tensor([-1.5, -1.5, -2.0, -2.0]), SimpleNamespace(num_pairs=2, desirable=None))
    assert isinstance(lp, PairLogps)
    assert lp.policy_chosen.tolist() == [-1.0, -2.0] and lp.policy_rejected.tolist() == [-3.0, -4.0]
    assert lp.chosen_logratios.tolist() == [0.5, -0.5] and lp.rejected_logratios.tolist() == [-1.0, -2.0]
    assert lp.prompt.tolist() == [-0.5, -0.25] and lp.prompt_tokens.tolist() == [6.0, 7.0]
    assert lp.chosen_tokens.tolist() == [2.0, 3.0]


def test_without_a_reference_the_log_ratios_are_the_policys_log_probs():
    scores = SequenceScores(torch.tensor([-1.0, -3.0]), torch.ones(2), torch.zeros(2))
    lp = split_scores(scores, None, SimpleNamespace(num_pairs=1, desirable=None))
    assert not lp.has_reference and lp.chosen_logratios.tolist() == [-1.0]
    assert set(lp.terms()) == {"policy logps/chosen", "policy logps/rejected"}


def test_unpaired_rows_pair_each_completion_with_a_mismatched_one():
    scores = SequenceScores(torch.tensor([-1.0, -2.0, -5.0, -6.0]), torch.ones(4), torch.zeros(4))
    batch = SimpleNamespace(num_pairs=2, desirable=torch.tensor([True, False]))
    lp = split_scores(scores, torch.tensor([-1.0, -1.0, -4.0, -4.0]), batch)
    assert isinstance(lp, UnpairedLogps)
    assert lp.logratios.tolist() == [0.0, -1.0] and lp.kl_logratios.tolist() == [-1.0, -2.0]
