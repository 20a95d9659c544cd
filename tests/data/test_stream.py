"""lit_dpo/data/stream.py: training rows read as training goes, dealt to ranks in equal turns, resumed exactly."""

import csv
import json

import datasets
import pytest

from lit_dpo.data import PreferenceDataModule
from lit_dpo.data.sources import Source
from lit_dpo.errors import DataError, InputError


def _write(folder, rows, form):
    """The rows as a data file (jsonl, csv) or a folder of Parquet files (a ``datasets`` stream)."""
    if form == "jsonl":
        path = folder / "train.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif form == "csv":
        path = folder / "train.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        path = folder / "parquet"
        path.mkdir()
        for i in range(0, len(rows), 13):  # several files: the stream's state spans shards
            datasets.Dataset.from_list(rows[i : i + 13]).to_parquet(str(path / f"part-{i:03}.parquet"))
    return str(path)


@pytest.fixture
def streamed(tmp_path, tiny_model_dir, standard_rows):
    """``streamed(form, **options)``: a set-up streaming data module over 40 numbered rows in that form."""
    rows = [dict(r, prompt=f"row {i} {r['prompt']}") for i, r in enumerate(standard_rows(40))]
    paths = {}

    def make(form="jsonl", **options):
        if form not in paths:
            (tmp_path / form).mkdir()
            paths[form] = _write(tmp_path / form, rows, form)
        settings = dict(path=paths[form], val_split=0, streaming=True, stream_window=12, batch_size=3)
        data = PreferenceDataModule(**settings | {"tokenizer_name_or_path": tiny_model_dir} | options)
        data.setup("fit")
        return data

    return make


def _prompts(tokenizer, examples):
    return [tokenizer.decode(ex.prompt_ids) for ex in examples]


def _take(data, batches):
    """Up to ``batches`` batches as Lightning's training loop takes them: each fetched one batch ahead, then taken
    (``commit``, as ``on_before_batch_transfer`` does in a fit); returns their prompts and the loader's state after the last one taken."""
    loader = data.train_dataloader()
    iterator, taken = iter(loader), []
    ahead = next(iterator, None)
    while len(taken) < batches and ahead is not None:
        batch, ahead = ahead, next(iterator, None)
        data.stream.commit()
        taken.append(batch.input_ids.tolist())
    return taken, loader.state_dict()


@pytest.mark.parametrize("form", ["jsonl", "csv", "parquet"])
def test_a_resume_from_any_batch_continues_exactly(streamed, form):
    straight, _ = _take(streamed(form), 100)
    assert len(straight) == 14  # 40 rows in batches of 3
    for stop in (1, 4, 5, 13):  # in the first window, at a window's end, across windows, at the last batch
        first, state = _take(streamed(form), stop)
        resumed = streamed(form)
        loader = resumed.train_dataloader()
        loader.load_state_dict(state)
        rest = [batch.input_ids.tolist() for batch in loader]
        assert first + rest == straight, (form, stop)


def test_every_row_once_per_epoch_shuffled_within_windows_by_seed_and_epoch(streamed, tokenizer):
    data = streamed()
    order = _prompts(tokenizer, data.stream)
    numbers = [int(p.split()[1]) for p in order]
    assert sorted(numbers) == list(range(40)) and numbers != list(range(40))
    assert sorted(numbers[:12]) == list(range(12))  # shuffled within the first window only
    assert _prompts(tokenizer, streamed().stream) == order  # the same seed and epoch: the same order
    data.stream.epoch = lambda: 1
    assert _prompts(tokenizer, data.stream) != order
    assert [int(p.split()[1]) for p in _prompts(tokenizer, streamed(shuffle=False).stream)] == list(range(40))


def test_ranks_take_equal_turns_of_every_window_and_together_cover_each_row_once(streamed, tokenizer):
    shares = []
    for rank in range(3):
        data = streamed()
        data.stream.rank, data.stream.world_size = rank, 3
        shares.append(list(data.stream))
    assert len({len(share) for share in shares}) == 1  # as many batches on every rank: no rank waits for another
    real = [ex for share in shares for ex in share if ex.weight > 0]
    assert sorted(int(p.split()[1]) for p in _prompts(tokenizer, real)) == list(range(40))
    assert sum(ex.weight == 0 for share in shares for ex in share) == 2  # windows of 12, 12, 12, 4: 4 -> 6


def test_sources_share_each_window_by_weight(tmp_path, tiny_model_dir, standard_rows, write_jsonl, tokenizer):
    a = write_jsonl(tmp_path / "a.jsonl", [dict(r, prompt="A " + r["prompt"]) for r in standard_rows(30)])
    b = write_jsonl(tmp_path / "b.jsonl", [dict(r, prompt="B " + r["prompt"]) for r in standard_rows(10, 1)])
    data = PreferenceDataModule(path=[Source(a, weight=3.0), Source(b)], val_split=0, streaming=True,
                                stream_window=8, shuffle=False, tokenizer_name_or_path=tiny_model_dir)  # fmt: skip
    data.setup("fit")
    sources = [p.split()[0] for p in _prompts(tokenizer, data.stream)]
    assert sources[:8] == ["A"] * 6 + ["B"] * 2 and sources.count("A") == 30 and sources.count("B") == 10
    assert {ex.source for ex in data.stream} == {0, 1} and data.source_names == ["a", "b"]


def test_a_bad_row_past_the_first_window_stops_with_one_line(tmp_path, tiny_model_dir, standard_rows, monkeypatch):
    monkeypatch.setattr("lit_dpo.data.stream.PEEK_ROWS", 8)  # what setup checks before training starts
    rows = [json.dumps(r) for r in standard_rows(30)]
    rows[20] = json.dumps({"prompt": "hi", "chosen": 3, "rejected": "no"})
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(rows) + "\n")
    data = PreferenceDataModule(path=str(path), val_split=0, streaming=True, stream_window=8,
                                tokenizer_name_or_path=tiny_model_dir)  # fmt: skip
    data.setup("fit")  # the first rows are fine
    with pytest.raises(DataError, match=rf"^{path}, row 21, field 'chosen': "):
        list(data.stream)
    monkeypatch.setattr("lit_dpo.data.stream.PEEK_ROWS", 1024)  # the default: found before training starts
    with pytest.raises(DataError, match=rf"^{path}, row 21, field 'chosen': "):
        data.stream = None
        data.tokenizer = None
        data.setup("fit")


def test_what_streaming_cannot_do_is_one_line_each(tmp_path, tiny_model_dir, standard_rows, write_jsonl):
    path = write_jsonl(tmp_path / "t.jsonl", standard_rows(8))

    def setup(**options):
        data = PreferenceDataModule(**dict(path=path, streaming=True, tokenizer_name_or_path=tiny_model_dir) | options)
        data.setup("fit")

    with pytest.raises(InputError, match="cannot hold a fraction of them out: pass --data.val_path"):
        setup()
    with pytest.raises(InputError, match="leave --data.num_workers at 0"):
        setup(val_split=0, num_workers=2)
    with pytest.raises(InputError, match="give a source weight"):
        setup(val_split=0, path=[Source(path, rows=4)])
    with pytest.raises(InputError, match="--data.stream_window must be >= 1"):
        setup(val_split=0, stream_window=0)
    setup(val_path=path)  # validation from a file, as without streaming


def test_a_streamed_fit_through_the_cli_stops_at_a_bad_row_with_one_line(
    tmp_path, tiny_model_dir, standard_rows, fit_args, capsys, monkeypatch
):
    from lit_dpo import fit

    monkeypatch.setattr("lit_dpo.data.stream.PEEK_ROWS", 8)
    rows = [json.dumps(r) for r in standard_rows(24)]
    rows[17] = json.dumps({"prompt": "hi", "chosen": "yes", "rejected": None})
    bad, val = tmp_path / "bad.jsonl", tmp_path / "val.jsonl"
    bad.write_text("\n".join(rows) + "\n")
    val.write_text("\n".join(rows[:4]) + "\n")
    args = fit_args(tiny_model_dir, str(bad), str(val), tmp_path, "--data.streaming=true", "--data.stream_window=8")
    with pytest.raises(SystemExit) as exit_info:
        fit.main(args)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "lit_dpo: error: --data.streaming=true needs --trainer.max_steps: the number of training rows is not known "
        "before training"
    )
    with pytest.raises(SystemExit) as exit_info:
        fit.main(args + ["--trainer.max_steps=20"])  # trains on the first two windows, then meets row 18
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"lit_dpo: error: {bad}, row 18, field 'rejected': is null"), err[-1]
    metrics = (tmp_path / "lightning_logs" / "version_1" / "metrics.csv").read_text()
    assert "train/loss" in metrics  # it trained until the bad row


def test_online_dpo_refuses_streaming():
    from lit_dpo.data import OnlineDataModule

    with pytest.raises(InputError, match="online DPO reads its prompts up front"):
        OnlineDataModule(streaming=True)
