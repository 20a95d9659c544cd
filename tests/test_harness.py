"""General ability before and after DPO (``lit_dpo.harness``): the offline task, the scores' names and table, and
a model scored in memory without disturbing the fit around it."""

import random
import shutil
import types

import pytest
import torch
from transformers import AutoModelForCausalLM

from lit_dpo import harness
from lit_dpo.callbacks import EvalHarness
from lit_dpo.errors import InputError
from lit_dpo.harness import offline


@pytest.fixture(scope="module")
def manager():
    return harness.task_manager([offline.NAME])


def test_the_shipped_task_is_the_scripts_output(tmp_path):
    rebuilt = offline.write_rows(tmp_path / "rows.jsonl")
    assert rebuilt.read_text() == offline.ROWS.read_text()
    rows = offline.build_rows()
    assert len(rows) == offline.SIZE and all(0 <= r["answer"] < len(r["choices"]) for r in rows)
    assert all(len(set(r["choices"])) == len(r["choices"]) for r in rows)  # one right answer, distinct choices


def test_the_harness_results_become_scores():
    results = {"arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.1, "exact_match,strict": 1}}
    assert harness._scores(results) == {"arc_easy": {"acc": 0.5, "exact_match_strict": 1.0}}


def test_scores_are_logged_by_side_with_their_delta():
    logged = harness.logged({"t": {"acc": 0.5, "f1": 0.2}}, {"t": {"acc": 0.75}})
    assert logged == {
        "eval/reference/t/acc": 0.5,
        "eval/reference/t/f1": 0.2,
        "eval/policy/t/acc": 0.75,
        "eval/delta/t/acc": 0.25,
    }
    assert harness.table(logged).splitlines()[2:] == [
        "| t | acc | 0.5000 | 0.7500 | +0.2500 |",
        "| t | f1 | 0.2000 | - | - |",
    ]
    assert harness.table({"val/loss": 0.3}) == ""


def test_an_unknown_task_is_one_line(manager):
    with pytest.raises(InputError, match=r"--eval_harness.tasks: unknown task 'hellaswg' .*lit_dpo_arithmetic"):
        harness.check_tasks(["hellaswg"], manager)


def test_a_model_is_scored_in_memory_and_left_as_it_was(manager, tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    torch.manual_seed(7)
    random.seed(7)
    expected = (torch.rand(1), random.random())
    torch.manual_seed(7)
    random.seed(7)
    scores = harness.evaluate(model, tokenizer, [offline.NAME], manager, limit=6, batch_size=4)
    assert (torch.rand(1), random.random()) == expected  # the fit's own draws do not depend on the evaluation
    assert model.training
    acc = scores[offline.NAME]["acc"]
    assert set(scores[offline.NAME]) == {"acc", "acc_norm"} and acc * 6 == pytest.approx(round(acc * 6))


def test_a_resume_without_the_references_scores_is_refused():
    callback = EvalHarness(tasks=[offline.NAME])
    callback.load_state_dict({})
    with pytest.raises(InputError, match="saved without the reference's scores"):
        callback.on_train_start(types.SimpleNamespace(global_step=5), None)
    callback.load_state_dict({"reference": {offline.NAME: {"acc": 0.5}}})
    callback.on_train_start(types.SimpleNamespace(global_step=5), None)  # recorded: nothing to evaluate again


def test_eval_compares_a_model_with_the_base_its_card_names(tiny_dirs, tmp_path, capsys):
    from lit_dpo import eval as lit_eval

    policy, reference = tiny_dirs
    model = tmp_path / "export"
    shutil.copytree(policy, model)
    (model / "README.md").write_text(f"---\nlit_dpo_base_model: {reference}\n---\n# an export\n")
    lit_eval.main([str(model), "--tasks", offline.NAME, "--limit", "4", "--output", str(tmp_path / "s.json")])
    shown = capsys.readouterr().out
    assert f"| {offline.NAME} | acc |" in shown and (tmp_path / "s.json").is_file()
    same = lit_eval.evaluate_model(str(model), [offline.NAME], reference=policy, limit=4)
    assert same[f"eval/delta/{offline.NAME}/acc"] == 0.0  # a model against itself


def test_eval_refuses_what_is_no_model(tmp_path, capsys):
    from lit_dpo import eval as lit_eval

    with pytest.raises(SystemExit) as exit_:
        lit_eval.main([str(tmp_path), "--tasks", offline.NAME])
    assert exit_.value.code == 2 and "not a Hugging Face model folder" in capsys.readouterr().err
