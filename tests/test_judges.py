"""lit_dpo/judges.py: the built-in judges, TRL's two judge conventions, and win-rate with ties and shuffling."""

import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from lit_dpo.errors import InputError
from lit_dpo.judges import RewardModel, load_judge, reference_answer, score_samples, token_f1, wins


def test_token_f1_by_hand():
    # "the cat sat" vs "the cat ran away": 2 common words; precision 2/3, recall 2/4 -> F1 = 2*(2/3)(1/2)/(7/6) = 4/7
    assert token_f1("The cat sat", "the cat ran away") == pytest.approx(4 / 7)
    assert token_f1("", "anything") == 0.0 and token_f1("a a", "a") == pytest.approx(2 / 3)


def test_reference_answer_rewards_closeness_to_chosen_over_rejected():
    scores = reference_answer(["q", "q"], ["paris is the capital", "berlin"], ["paris is the capital"], ["berlin"] * 2)
    assert scores == [pytest.approx(1.0)]  # zip stops at the shortest column: one row here
    both = reference_answer(["q"] * 2, ["paris", "berlin"], ["paris"] * 2, ["berlin"] * 2)
    assert both == [1.0, -1.0]


def test_wins_from_a_reward_function_count_ties_half():
    def longer(prompts, completions):
        return [len(c) for c in completions]

    assert wins(longer, ["a", "b", "c"], ["xx", "x", "x"], ["x", "xx", "x"], {}, seed=0) == [1.0, 0.0, 0.5]


def test_wins_from_a_pairwise_judge_undo_the_shuffled_order():
    class PrefersLonger:
        def __init__(self):
            self.pairs = []

        def judge(self, prompts, completions_pairs):
            self.pairs += completions_pairs
            return [0 if len(a) > len(b) else 1 if len(b) > len(a) else -1 for a, b in completions_pairs]

    judge = PrefersLonger()
    policy, reference = ["long answer"] * 8 + ["tie"], ["short"] * 8 + ["tie"]
    assert wins(judge, ["p"] * 9, policy, reference, {}, seed=3) == [1.0] * 8 + [0.5]
    assert {tuple(p) for p in judge.pairs[:8]} == {("long answer", "short"), ("short", "long answer")}  # shuffled


def test_a_judge_is_imported_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "myjudges.py").write_text("def shorter(prompts, completions, chosen):\n"
                                          "    return [-len(c) for c in completions]\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    judge = load_judge("myjudges.shorter")
    assert wins(judge, ["q"], ["a"], ["abc"], {"chosen": ["a"], "rejected": ["b"]}, seed=0) == [1.0]
    with pytest.raises(InputError, match="myjudges.nothing.*cannot import"):
        load_judge("myjudges.nothing")


def test_a_reward_model_scores_with_its_sequence_classification_head(tmp_path, tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_labels=1, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    judge = load_judge(f"reward_model:{tmp_path / 'rm'}")
    assert isinstance(judge, RewardModel)
    scores = judge(["what is red?"] * 3, ["red is a colour", "blue", "red is a colour"])
    assert len(scores) == 3 and scores[0] == pytest.approx(scores[2]) and scores[0] != scores[1]


def test_exact_answer_checks_the_last_number_or_the_words():
    completions = ["3 plus 4 is 7.", "3 + 4 = 8", "It is 7, no, 9", "The capital is new delhi.", "Delhi", "7.0"]
    answers = ["7", "7", "7", "New Delhi", "New Delhi", "7"]
    assert load_judge("exact_answer")(["q"] * 6, completions, answer=answers) == [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]


def test_score_samples_with_a_reward_function_passes_each_rows_columns():
    from lit_dpo.judges import score_samples, wins

    def right(prompts, completions, answer):
        return [float(a in c) for c, a in zip(completions, answer)]

    scores = score_samples(right, ["p1", "p2"], [["a1", "b"], ["x", "a2", "a2!"]], [{"answer": "a1"},
                           {"answer": "a2"}], seed=0)  # fmt: skip
    assert scores == [[1.0, 0.0], [0.0, 1.0, 1.0]]
    # a rank with no prompts (fewer held-out prompts than ranks): nothing to score, and no column to pass
    assert score_samples(right, [], [], [], seed=0) == [] and wins(right, [], [], [], {}, seed=0) == []


def test_score_samples_with_a_pairwise_judge_counts_wins_in_every_order():
    from lit_dpo.judges import score_samples

    class Longer:  # prefers the longer text, whichever position it is shown in
        def judge(self, prompts, completions_pairs):
            return [0 if len(a) > len(b) else 1 if len(b) > len(a) else -1 for a, b in completions_pairs]

    # 3 samples: 3 comparisons; "ccc" beats both (2), "bb" beats "a" (1), "a" none; a tie counts half each
    assert score_samples(Longer(), ["p"], [["a", "ccc", "bb"]], [{}], seed=3) == [[0.0, 2.0, 1.0]]
    assert score_samples(Longer(), ["p"], [["x", "y"]], [{}], seed=3) == [[0.5, 0.5]]


@pytest.mark.parametrize(
    "returned, problem",
    [
        ([1.0] * 31, "returned 31 scores for 32 completions"),
        ([1.0] * 31 + [float("nan")], "score 31 is nan; every score must be finite"),
        (["good"] + [1.0] * 31, "score 0 is 'good', not a number"),
        (["1"] + [1.0] * 31, "score 0 is '1', not a number"),
        ([True] + [1.0] * 31, "score 0 is True, not a number"),
    ],
)
def test_a_reward_functions_output_is_checked(returned, problem):
    """Count, type and finiteness: one line naming the judge and the first bad value (NaN is an error)."""

    def my_reward(prompts, completions):
        return returned

    separator = " " if problem.startswith("returned") else ": "
    with pytest.raises(InputError, match=rf"^judge \S*my_reward{separator}{re.escape(problem)}$"):
        score_samples(my_reward, ["p"] * 8, [["a", "b", "c", "d"]] * 8, [{}] * 8, seed=0)


def test_win_rate_checks_its_judges_too():
    def too_few(prompts, completions):
        return [1.0] * (len(completions) - 1)

    class Pairwise:
        def judge(self, prompts, completions_pairs):
            return [0, 2]

    with pytest.raises(InputError, match="returned 1 scores for 2 completions"):
        wins(too_few, ["p", "q"], ["a", "b"], ["c", "d"], {}, seed=0)
    with pytest.raises(InputError, match="judge Pairwise: pick 1 is 2; a pairwise judge answers 0, 1 or -1"):
        wins(Pairwise(), ["p", "q"], ["a", "b"], ["c", "d"], {}, seed=0)
