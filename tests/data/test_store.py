"""lit_dpo/data/store.py and examples.py: sources tokenized once into memory-mapped stores, cached by what they
follow from; examples read from them on demand."""

import json

import numpy as np
import pytest

import lit_dpo.data.chunks as chunks
import lit_dpo.data.store as store_module
from lit_dpo.data import Pair, PreferenceDataModule, parse_row, tokenize_row
from lit_dpo.data.examples import Examples, Padded, Part, digests
from lit_dpo.data.sources import Source
from lit_dpo.data.store import Limits, example_digest, open_store, store_key
from lit_dpo.data.tokenize import encode
from lit_dpo.errors import DataError

LIMITS = Limits(64, None, "keep_start")


def _data(path, tokenizer_dir, cache, **options):
    data = PreferenceDataModule(path=path, tokenizer_name_or_path=tokenizer_dir, cache_dir=str(cache), **options)
    data.setup("fit")
    return data


def _pairs(examples):
    return [(ex.prompt_ids, ex.chosen_ids, ex.rejected_ids, ex.row, ex.index, ex.source) for ex in examples]


def test_a_second_start_reads_the_cache_without_tokenizing(
    tmp_path, tiny_model_dir, standard_rows, write_jsonl, monkeypatch
):
    path = write_jsonl(tmp_path / "pairs.jsonl", standard_rows(40))
    first = _data(path, tiny_model_dir, tmp_path / "cache")
    monkeypatch.setattr(store_module, "tokenize_rows", lambda *a: pytest.fail("tokenized again"))
    second = _data(path, tiny_model_dir, tmp_path / "cache")
    assert _pairs(second.train_examples) == _pairs(first.train_examples) and len(first.train_examples) == 38
    assert _pairs(second.val_examples) == _pairs(first.val_examples)
    assert second.fingerprint() == first.fingerprint()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [store_key(Source(path, split="train"), None,
                                                                          first.tokenizer, first.limits)]  # fmt: skip


def test_what_the_examples_follow_from_is_in_the_key(tmp_path, tiny_model_dir, standard_rows, write_jsonl, tokenizer):
    path = write_jsonl(tmp_path / "pairs.jsonl", standard_rows(10))
    source = Source(path, split="train")
    key = store_key(source, None, tokenizer, LIMITS)
    assert store_key(source, None, tokenizer, Limits(32, None, "keep_start")) != key
    assert store_key(Source(path, split="train", columns={"prompt": "q"}), None, tokenizer, LIMITS) != key
    assert store_key(source, {"human": "user"}, tokenizer, LIMITS) != key
    other = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|endoftext|>")
    assert store_key(source, None, other, LIMITS) != key  # another EOS: other completions
    write_jsonl(tmp_path / "pairs.jsonl", standard_rows(11))  # the file changed
    assert store_key(source, None, tokenizer, LIMITS) != key


def test_an_edited_file_is_read_again(tmp_path, tiny_model_dir, standard_rows, write_jsonl):
    path = write_jsonl(tmp_path / "pairs.jsonl", standard_rows(10))
    assert len(_data(path, tiny_model_dir, tmp_path / "cache", val_split=0).train_examples) == 10
    write_jsonl(tmp_path / "pairs.jsonl", standard_rows(12))
    assert len(_data(path, tiny_model_dir, tmp_path / "cache", val_split=0).train_examples) == 12


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 4 rows, 1 of them tokenized here: a few rows reach the worker processes."""
    monkeypatch.setattr(store_module, "CHUNK_ROWS", 4)
    monkeypatch.setattr(chunks, "INLINE_CHUNKS", 1)


def test_worker_processes_give_the_same_examples(tmp_path, tiny_model_dir, chat_rows, write_jsonl, small_chunks):
    rows = chat_rows(30)
    rows[5] = rows[5] | {"rejected": rows[5]["chosen"]}  # left out (identical completions) in a worker's chunk
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    one = _data(path, tiny_model_dir, tmp_path / "one", num_proc=1, max_length=20)
    two = _data(path, tiny_model_dir, tmp_path / "two", num_proc=2, max_length=20)
    assert _pairs(two.train_examples) == _pairs(one.train_examples) and len(one.train_examples) > 20
    assert _pairs(two.val_examples) == _pairs(one.val_examples)
    assert [json.dumps(_log(log)) for log in two.logs] == [json.dumps(_log(log)) for log in one.logs]
    assert one.logs[0].dropped["identical completions"] == [6]


def _log(log):
    return [
        log.rows,
        log.kept,
        [int(n) for n in log.truncated],
        {k: [int(n) for n in v] for k, v in log.dropped.items()},
    ]


def test_a_bad_row_in_a_worker_is_one_line_and_leaves_no_store(
    tmp_path, tiny_model_dir, standard_rows, write_jsonl, small_chunks
):
    rows = standard_rows(30)
    rows[22] = {"prompt": "what", "chosen": " yes", "rejected": 3}
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "mine.txt").write_text("not lit_dpo's")
    with pytest.raises(DataError, match=r"pairs.jsonl, row 23, field 'rejected': expected a string"):
        _data(path, tiny_model_dir, tmp_path / "cache", num_proc=2)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["mine.txt"]


def test_a_store_built_twice_keeps_the_first(tmp_path, standard_rows, write_jsonl, tokenizer):
    """Two nodes tokenizing the same source into a shared cache: the second finds the first's store in place."""
    source = Source(write_jsonl(tmp_path / "pairs.jsonl", standard_rows(6)), split="train")
    store = open_store(source, None, tokenizer, LIMITS, tmp_path / "cache", 1)
    store_module.build(store.folder, source, store_module.ChunkTokenizer(source.path, store_module.RowFormat(),
                                                                        tokenizer, LIMITS), 1)  # fmt: skip
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [store.folder.name]
    assert len(store_module.ExampleStore(store.folder)) == 6


def test_examples_read_from_stores(tmp_path, standard_rows, write_jsonl, tokenizer):
    rows = standard_rows(5)
    store = open_store(Source(write_jsonl(tmp_path / "p.jsonl", rows)), None, tokenizer, LIMITS, tmp_path, 1)
    examples = Examples([Part(store, np.array([4, 0, 0]), source=1), Part(store, np.array([2]), source=0)], first=7)
    expected = [tokenize_row(tokenizer, parse_row(rows[i], row=i + 1)) for i in (4, 0, 0, 2)]
    assert len(examples) == 4 and [ex.index for ex in examples] == [7, 8, 9, 10]
    assert [ex.source for ex in examples] == [1, 1, 1, 0] and examples[-1].row == 3
    assert [(ex.prompt_ids, ex.chosen_ids, ex.rejected_ids) for ex in examples] == [
        (ex.prompt_ids, ex.chosen_ids, ex.rejected_ids) for ex in expected
    ]
    assert list(digests(examples)) == [example_digest(ex) for ex in expected]
    assert digests(examples)[1] == digests(examples)[2] != digests(examples)[0]
    with pytest.raises(IndexError):
        examples[4]
    reordered = Examples([Part(store, np.array([0, 4, 0]), source=1), Part(store, np.array([2]), source=0)])
    assert reordered.fingerprint() != examples.fingerprint()
    padded = Padded(examples, 2)
    assert len(padded) == 6 and [ex.weight for ex in padded] == [1.0] * 4 + [0.0] * 2 and padded[5].index == 8


def test_encode_is_the_tokenizers_call(tokenizer):
    texts = ["what is the cat", "the ca", "yes<|im_end|> no", ""]
    for special in (True, False):
        assert encode(tokenizer, texts, [special] * 4) == tokenizer(texts, add_special_tokens=special)["input_ids"]
    mixed = encode(tokenizer, texts, [True, False, True, False])
    assert mixed == [tokenizer(t, add_special_tokens=s)["input_ids"] for t, s in zip(texts, [True, False] * 2)]
    assert isinstance(tokenize_row(tokenizer, parse_row({"prompt": "a", "chosen": " b", "rejected": " c"})), Pair)


def test_a_store_pickles_as_its_folder(tmp_path, standard_rows, write_jsonl, tokenizer):
    """Loader workers that are spawned, not forked, map the file again instead of receiving a copy of it."""
    import pickle

    store = open_store(Source(write_jsonl(tmp_path / "p.jsonl", standard_rows(3))), None, tokenizer, LIMITS, tmp_path)
    assert len(pickle.dumps(store)) < 500
    assert pickle.loads(pickle.dumps(store)).example(2) == store.example(2)


def test_a_cache_that_cannot_be_written_warns_and_the_run_goes_on(tmp_path, tiny_model_dir, standard_rows, write_jsonl):
    path = write_jsonl(tmp_path / "pairs.jsonl", standard_rows(10))
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.warns(UserWarning, match="could not use the data cache .*tokenized into .* for this run only"):
        data = _data(path, tiny_model_dir, tmp_path / "a_file" / "cache", val_split=0)
    scratch = data._scratch
    assert len(data.train_examples) == 10 and scratch.is_dir()
    del data
    import gc

    gc.collect()
    assert not scratch.exists()  # the temporary stores go with the data module
