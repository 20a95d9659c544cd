"""lit_dpo/data/datamodule.py: examples numbered across train and val, and validation evened out over ranks."""

import csv
import types

import pytest
import torch

from lit_dpo import fit
from lit_dpo.data import Pair, PreferenceDataModule, UnpairedExample, pad_for_ranks
from lit_dpo.data.sources import Source
from lit_dpo.errors import DataError, InputError


def test_pad_for_ranks_adds_weight_zero_copies():
    pairs = [Pair([i], [1], [2]) for i in range(5)]
    padded = pad_for_ranks(pairs, 4)
    assert len(padded) == 8 and [p.weight for p in padded] == [1.0] * 5 + [0.0] * 3
    assert pad_for_ranks(pairs, 5) == pairs


def test_examples_are_numbered_and_typed(tmp_path, tiny_model_dir, standard_rows, unpaired_rows, write_jsonl):
    """Train examples are 0..N-1 and val examples N..: the keys of cached reference log-probs."""
    data = PreferenceDataModule(
        path=write_jsonl(tmp_path / "t.jsonl", standard_rows(6)),
        val_path=write_jsonl(tmp_path / "v.jsonl", standard_rows(3, 1)),
        tokenizer_name_or_path=tiny_model_dir,
    )
    data.setup("fit")
    assert [ex.index for ex in [*data.train_examples, *data.val_examples]] == list(range(9))
    assert all(isinstance(ex, Pair) for ex in data.train_examples) and not data.unpaired
    rows = unpaired_rows(standard_rows(4), [True, False, True, False])
    kto = PreferenceDataModule(
        path=write_jsonl(tmp_path / "u.jsonl", rows), val_split=0, tokenizer_name_or_path=tiny_model_dir
    )
    kto.setup("fit")
    assert kto.unpaired and [ex.desirable for ex in kto.train_examples] == [True, False, True, False]
    assert all(isinstance(ex, UnpairedExample) for ex in kto.train_examples)


def _setup(tiny_model_dir, **options):
    data = PreferenceDataModule(tokenizer_name_or_path=tiny_model_dir, **options)
    data.setup("fit")
    return data


def test_the_default_truncates_and_drops_what_becomes_identical(tmp_path, tiny_model_dir, write_jsonl):
    long_prompt = "what is " + "the cat " * 30
    rows = [
        {"prompt": "what is it", "chosen": " yes it is", "rejected": " no"},  # fits
        {"prompt": long_prompt, "chosen": " yes", "rejected": " no"},  # prompt over max_length: its start is cut
        {
            "prompt": "what is it",
            "chosen": " yes it is the cat" * 8,
            "rejected": " yes it is the cat" * 9,
        },  # alike once cut
    ]
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    with pytest.warns(UserWarning) as warned:
        data = _setup(tiny_model_dir, path=path, val_split=0, max_length=24)
    (message,) = [str(w.message) for w in warned if "long.jsonl" in str(w.message)]
    assert message.endswith(
        "long.jsonl: 1 of 3 pairs truncated and 1 dropped to fit max_length=24, max_prompt_length=None "
        "(truncated: row 2; identical completions after truncation: row 3)"
    )
    assert [ex.row for ex in data.train_examples] == [1, 2]
    assert len(data.train_examples[1].prompt_ids) + len(data.train_examples[1].chosen_ids) <= 24
    assert data.tokenizer.decode(data.train_examples[1].prompt_ids).endswith("the cat ")  # its end is kept


@pytest.mark.parametrize(
    "options, message",
    [
        ({"batch_size": 0}, r"--data.batch_size must be >= 1, got 0"),
        ({"max_length": 0}, r"--data.max_length must be >= 1, got 0"),
        ({"val_split": 1.0}, r"--data.val_split must be in \[0, 1\), got 1.0"),
        ({"val_split": -0.1}, r"--data.val_split must be in \[0, 1\)"),
        ({"path": "[{path: a.jsonl, wieght: 2}]"}, r"is neither a path nor a list of sources"),
    ],
)
def test_bad_options_are_refused_before_anything_loads(options, message, tiny_model_dir):
    with pytest.raises(InputError, match=message):
        _setup(tiny_model_dir, **options)


def test_sources_mix_with_weights_and_row_counts(tmp_path, tiny_model_dir, standard_rows, chat_rows, write_jsonl):
    a = write_jsonl(tmp_path / "a.jsonl", standard_rows(10))
    b = write_jsonl(tmp_path / "b.jsonl", standard_rows(20, seed=1))
    c = write_jsonl(tmp_path / "c.jsonl", chat_rows(8, seed=2))
    sources = [a, Source(b, name="bee", weight=0.5), Source(c, rows=12)]
    data = _setup(tiny_model_dir, path=sources, val_split=0.25)
    assert data.source_names == ["a", "bee", "c"]
    counts = [sum(ex.source == i for ex in data.train_examples) for i in range(3)]
    # held out first (a quarter of each source), then weighed: 8 of a, half of 15 of b, 12 from 6 of c (repeated)
    assert counts == [8, 8, 12] and data.val_source_names == ["a", "bee", "c"]
    assert [sum(ex.source == i for ex in data.val_examples) for i in range(3)] == [2, 5, 2]
    indices = [ex.index for ex in [*data.train_examples, *data.val_examples]]
    assert indices == list(range(len(indices)))
    again = _setup(tiny_model_dir, path=sources, val_split=0.25)
    assert [ex.row for ex in again.train_examples] == [ex.row for ex in data.train_examples]  # seeded: the same


def test_one_form_per_run(tmp_path, tiny_model_dir, standard_rows, unpaired_rows, write_jsonl):
    pairs = write_jsonl(tmp_path / "p.jsonl", standard_rows(4))
    kto = write_jsonl(tmp_path / "u.jsonl", unpaired_rows(standard_rows(4), [True] * 4))
    with pytest.raises(DataError, match="the sources mix row forms"):
        _setup(tiny_model_dir, path=[pairs, kto], val_split=0)


def test_rows_left_out_are_counted_in_one_warning_with_their_rows(tmp_path, tiny_model_dir, write_jsonl):
    rows = [{"prompt": "p", "chosen": " a", "rejected": " b"}] * 3
    rows += [{"prompt": "p", "chosen": " ", "rejected": " b"}, {"prompt": "p", "chosen": " a", "rejected": " a"}]
    with pytest.warns(
        UserWarning, match=r"d.jsonl: 2 of 5 rows dropped \(empty completion: row 4; identical completions: row 5\)"
    ):
        data = _setup(tiny_model_dir, path=write_jsonl(tmp_path / "d.jsonl", rows), val_split=0)
    assert [ex.row for ex in data.train_examples] == [1, 2, 3]


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_hh_rlhf_rows_train_as_they_come(tiny_model_dir, tmp_path, standard_rows, write_jsonl):
    """Anthropic's hh-rlhf form: no prompt column, the prompt implicit in both strings."""
    rows = [
        {"chosen": f"\n\nHuman: {r['prompt']}\n\nAssistant:{r['chosen']}", "rejected": f"\n\nHuman: {r['prompt']}\n\nAssistant:{r['rejected']}"}
        for r in standard_rows(40)
    ]  # fmt: skip
    hh = write_jsonl(tmp_path / "hh.jsonl", rows)
    fit.main([f"--model.model_name_or_path={tiny_model_dir}", f"--data.path={hh}", f"--trainer.default_root_dir={tmp_path}",
              "--trainer.max_steps=3", "--trainer.enable_progress_bar=false"])  # fmt: skip
    metrics = _rows(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    assert sum(1 for r in metrics if r["train/loss"]) == 3 and any(r["val/loss"] for r in metrics)


def test_mixed_sources_and_metrics_per_validation_source(
    tiny_model_dir, tmp_path, standard_rows, chat_rows, write_jsonl
):
    a = write_jsonl(tmp_path / "a.jsonl", standard_rows(24))
    b = write_jsonl(
        tmp_path / "b.jsonl",
        [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in standard_rows(24, 1)],
    )
    path = f"[{a}, {{path: {b}, name: qa, weight: 0.5, columns: {{prompt: question, chosen: good, rejected: bad}}}}]"
    fit.main([f"--model.model_name_or_path={tiny_model_dir}", f"--data.path={path}", "--data.val_split=0.25",
              f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=2", "--trainer.enable_progress_bar=false"])  # fmt: skip
    final = [r for r in _rows(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") if r["val/loss"]][-1]
    for name in ("a", "qa"):
        assert final[f"val/{name}/loss"] and final[f"val/{name}/rewards/margins"], name
    # every pair once: the overall mean is the pair-weighted mean of the two sources (6 pairs each)
    overall = (float(final["val/a/loss"]) + float(final["val/qa/loss"])) / 2
    assert float(final["val/loss"]) == pytest.approx(overall, rel=1e-5)


def test_rows_are_rounded_to_64_tokens_on_a_gpu(tiny_model_dir):
    data = _setup(tiny_model_dir)
    assert data.collator().pad_to_multiple_of is None  # no trainer: a CPU, no padding added
    data.trainer = types.SimpleNamespace(strategy=types.SimpleNamespace(root_device=torch.device("cuda", 0)))
    assert data.collator().pad_to_multiple_of == 64
