"""lit_dpo/data/datamodule.py: examples numbered across train and val, and validation evened out over ranks."""

from lit_dpo.data import Pair, PreferenceDataModule, UnpairedExample, pad_for_ranks


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
    assert [ex.index for ex in data.train_examples + data.val_examples] == list(range(9))
    assert all(isinstance(ex, Pair) for ex in data.train_examples) and not data.unpaired
    rows = unpaired_rows(standard_rows(4), [True, False, True, False])
    kto = PreferenceDataModule(
        path=write_jsonl(tmp_path / "u.jsonl", rows), val_split=0, tokenizer_name_or_path=tiny_model_dir
    )
    kto.setup("fit")
    assert kto.unpaired and [ex.desirable for ex in kto.train_examples] == [True, False, True, False]
    assert all(isinstance(ex, UnpairedExample) for ex in kto.train_examples)
