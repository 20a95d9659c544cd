"""lit_dpo/data/sources.py: --data.path as one or several sources, with defaults, names and sampling."""

import pytest

from lit_dpo.data.sources import Source, as_sources, sample
from lit_dpo.errors import InputError


def test_sources_take_the_data_module_defaults_and_unique_names():
    sources = as_sources(["a/train.jsonl", {"path": "b/train.jsonl", "split": "dev"}, "hub/set"], "train", None, None)
    assert [s.name for s in sources] == ["train_1", "train_2", "set"]
    assert [s.split for s in sources] == ["train", "dev", "train"]


def test_weight_and_rows_sample_whole_copies_then_a_seeded_subset():
    items = list(range(4))
    assert sample(items, Source("p")) == items
    assert sample(items, Source("p", weight=2.0)) == items * 2
    half = sample(items, Source("p", weight=0.5))
    assert len(half) == 2 and half == sample(items, Source("p", rows=2))  # the same seeded rows, every run
    assert sample(items, Source("p", rows=6))[:4] == items


@pytest.mark.parametrize(
    "value, problem",
    [
        ([], "needs at least one source"),
        ([{"path": "a", "weights": 2}], "a source in --data.path takes the keys"),
        ([{"path": "a", "weight": 1.0, "rows": 3}], "give weight or rows, not both"),
        ([{"path": "a", "rows": 0}], "weight and rows must be > 0"),
        ("[a.jsonl, b.jsonl", "is neither a path nor a list of sources"),
    ],
)
def test_bad_sources_are_one_line(value, problem):
    with pytest.raises(InputError, match=problem):
        as_sources(value, "train", None, None)
