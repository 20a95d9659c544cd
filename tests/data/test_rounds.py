"""lit_dpo/data/rounds.py: judged samples -> best-vs-worst pairs, their records and the round's statistics."""

import pytest

from lit_dpo.data.prompts import Prompt
from lit_dpo.data.rounds import Judged, best_and_worst, form_pairs, round_stats


def test_best_and_worst_skips_ties_and_small_gaps():
    assert best_and_worst([0.2, 0.9, 0.1, 0.9]) == (1, 2)  # the first of equal bests
    assert best_and_worst([0.5, 0.5, 0.5]) is None  # nothing to prefer
    assert best_and_worst([0.1, 0.3], min_gap=0.5) is None and best_and_worst([0.1, 0.7], min_gap=0.5) == (1, 0)


def test_form_pairs_take_the_best_and_the_worst_sample_of_each_prompt():
    prompts = [Prompt([1, 2], "q0", {"answer": "4"}, row=3), Prompt([5], [{"role": "user", "content": "q1"}], row=7)]
    judged = [
        Judged(0, [[10], [11], [12]], ["a", "b", "c"], [0.5, 1.0, 0.0]),
        Judged(1, [[20], [21]], ["x", "y"], [1.0, 1.0]),  # a tie: no pair
    ]
    pairs, records = form_pairs(prompts, judged, min_gap=0.0)
    assert len(pairs) == 1 and (pairs[0].prompt_ids, pairs[0].chosen_ids, pairs[0].rejected_ids) == ([1, 2], [11], [12])
    assert pairs[0].row == 3
    assert records == [{"prompt": "q0", "chosen": "b", "rejected": "c", "chosen_score": 1.0, "rejected_score": 0.0,
                        "samples": ["a", "b", "c"], "scores": [0.5, 1.0, 0.0], "answer": "4"}]  # fmt: skip
    assert round_stats(judged, len(pairs)) == {"online/score_mean": pytest.approx(3.5 / 5), "online/score_max": 1.0,
                                               "online/gen_length": 1.0, "online/pairs": 1.0,
                                               "online/pair_fraction": 0.5}  # fmt: skip
