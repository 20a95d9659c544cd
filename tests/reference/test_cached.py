"""lit_dpo/reference/cached.py: cached reference log-probs give the live reference's losses, are reused across runs
and invalidated by changes."""

import copy
import shutil

import lightning as L
import pytest
import torch

from lit_dpo.data import Pair, PreferenceDataModule
from lit_dpo.hf import load_tokenizer
from lit_dpo.module import DPOModule
from lit_dpo.reference import ModelReference
from lit_dpo.reference import cached as reference_cache


def test_compute_splits_pairs_over_ranks_and_gathers_them_in_order():
    pairs = [{"id": i} for i in range(5)]

    def batch_logps(batch):  # chosen = id, rejected = -id
        return torch.tensor([p["id"] for p in batch] + [-p["id"] for p in batch], dtype=torch.float32)

    shares = {}
    for rank in (0, 1):  # each rank's own share; rank 0 takes pairs 0, 2, 4, rank 1 pairs 1, 3 and a repeat of 4
        reference_cache.compute(pairs, list, batch_logps, 2, rank, 2, lambda t, r=rank: shares.setdefault(r, t)[None])
    assert shares[0][:, 0].tolist() == [0, 2, 4] and shares[1][:, 0].tolist() == [1, 3, 4]
    out = reference_cache.compute(pairs, list, batch_logps, 2, 0, 2, lambda t: torch.stack([shares[0], shares[1]]))
    assert out.tolist() == [[i, -i] for i in range(5)]


def test_fingerprint_changes_with_ids_weights_and_settings():
    pairs = [Pair([1, 2], [3], [4, 5])]
    key = reference_cache.pairs_fingerprint(pairs, "w", {"dtype": "float32"})
    assert key == reference_cache.pairs_fingerprint([Pair([1, 2], [3], [4, 5], index=7)], "w", {"dtype": "float32"})
    assert key != reference_cache.pairs_fingerprint([Pair([1, 2], [3, 6], [4, 5])], "w", {"dtype": "float32"})
    assert key != reference_cache.pairs_fingerprint(pairs, "v", {"dtype": "float32"})
    assert key != reference_cache.pairs_fingerprint(pairs, "w", {"dtype": "bfloat16"})
    weights = {"a": torch.zeros(3)}
    assert reference_cache.weights_fingerprint(weights) != reference_cache.weights_fingerprint({"a": torch.ones(3)})


class Recorder(L.Callback):
    """Per-step training losses, and whether a reference model was in memory during training."""

    def __init__(self):
        self.losses, self.reference_seen = [], False

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.reference_seen |= isinstance(module.reference, ModelReference)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def _fit(policy, reference, train, val, precompute, tokenizer=None, steps=4):
    L.seed_everything(0)
    module = DPOModule(
        model_name_or_path=policy,
        ref_model_name_or_path=reference,
        learning_rate=1e-3,
        precompute_ref_log_probs=precompute,
    )
    data = PreferenceDataModule(path=train, val_path=val, tokenizer_name_or_path=tokenizer or policy)
    recorder = Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(module, data)
    return recorder


def _cached_files(root):
    return sorted((root / "ref_logps").glob("*.safetensors"))


def test_cached_run_equals_live_run_and_reuses_the_cache(tiny_dirs, tmp_path, monkeypatch, standard_rows, write_jsonl):
    monkeypatch.setenv("LIT_DPO_CACHE", str(tmp_path / "cache"))
    policy, reference = tiny_dirs
    train = write_jsonl(tmp_path / "train.jsonl", standard_rows(24))
    val = write_jsonl(tmp_path / "val.jsonl", standard_rows(6, 7))
    live = _fit(policy, reference, train, val, precompute=False)
    cold = _fit(policy, reference, train, val, precompute=True)
    files = _cached_files(tmp_path / "cache")
    assert len(files) == 2  # train and val
    stamps = [f.stat().st_mtime_ns for f in files]
    warm = _fit(policy, reference, train, val, precompute=True)
    assert live.reference_seen and not cold.reference_seen and not warm.reference_seen
    assert live.losses[0] != pytest.approx(live.losses[-1])  # the policy moved: a real curve, not a constant
    for run in (cold, warm):
        torch.testing.assert_close(torch.tensor(run.losses), torch.tensor(live.losses), rtol=1e-5, atol=1e-6)
    assert _cached_files(tmp_path / "cache") == files and [f.stat().st_mtime_ns for f in files] == stamps

    # a changed data file: a new entry for train, the val entry reused
    write_jsonl(tmp_path / "train.jsonl", standard_rows(23) + [{"prompt": "x", "chosen": " yes", "rejected": " no"}])
    _fit(policy, reference, train, val, precompute=True, steps=1)
    assert len(_cached_files(tmp_path / "cache")) == 3
    # a changed tokenizer (another EOS appended to every completion): new entries for both
    changed = tmp_path / "tokenizer"
    shutil.copytree(policy, changed)
    tokenizer = load_tokenizer(str(changed))
    tokenizer.eos_token = "<|endoftext|>"
    tokenizer.save_pretrained(changed)
    _fit(policy, reference, train, val, precompute=True, tokenizer=str(changed), steps=1)
    assert len(_cached_files(tmp_path / "cache")) == 5
    # another reference: new entries
    _fit(policy, policy, train, val, precompute=True, tokenizer=str(changed), steps=1)
    assert len(_cached_files(tmp_path / "cache")) == 7


def test_auto_caches_only_when_the_fit_covers_every_pair(tiny_dirs, tmp_path, monkeypatch, standard_rows, write_jsonl):
    monkeypatch.setenv("LIT_DPO_CACHE", str(tmp_path / "cache"))
    policy, reference = tiny_dirs
    train = write_jsonl(tmp_path / "train.jsonl", standard_rows(24))
    val = write_jsonl(tmp_path / "val.jsonl", standard_rows(6, 7))
    epoch = _fit(policy, reference, train, val, precompute=None, steps=6)  # 6 steps x 4 pairs = every pair
    short = _fit(policy, reference, train, val, precompute=None, steps=5)  # a cache would score pairs never trained on
    assert not epoch.reference_seen and short.reference_seen
    assert len(_cached_files(tmp_path / "cache")) == 2
    live = _fit(policy, reference, train, val, precompute=False, steps=6)
    torch.testing.assert_close(torch.tensor(epoch.losses), torch.tensor(live.losses), rtol=1e-5, atol=1e-6)


@pytest.fixture
def stored(tmp_path, monkeypatch):
    """A cache entry of 3 pairs written under a fresh $LIT_DPO_CACHE: its key and path."""
    monkeypatch.setenv("LIT_DPO_CACHE", str(tmp_path / "cache"))
    key = "k" * 64
    reference_cache.save(key, torch.tensor([[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]]))
    return key, tmp_path / "cache" / "ref_logps" / f"{key}.safetensors"


def test_a_sound_cache_entry_loads(stored):
    key, _ = stored
    assert reference_cache.load(key, 3).tolist() == [[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]]


@pytest.mark.parametrize("damage", ["truncated", "nan", "rows", "renamed"])
def test_a_damaged_cache_entry_is_deleted_and_recomputed(stored, damage):
    from safetensors.torch import save_file

    key, path = stored
    if damage == "truncated":  # a kill mid-write on a filesystem without atomic rename
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "nan":  # edited
        save_file(
            {"logps": torch.tensor([[-1.0, float("nan")]] * 3)},
            str(path),
            {"format": reference_cache._FORMAT, "key": key, "rows": "3"},
        )
    elif damage == "renamed":  # another entry's file under this name
        save_file(
            {"logps": torch.zeros(3, 2)}, str(path), {"format": reference_cache._FORMAT, "key": "x" * 64, "rows": "3"}
        )
    rows = 4 if damage == "rows" else 3  # the data set has another size now
    with pytest.warns(UserWarning, match=f"reference log-prob cache {path}: .*; computing it again"):
        assert reference_cache.load(key, rows) is None
    assert not path.exists()


def test_cache_folders_are_private(stored, tmp_path):
    for folder in (tmp_path / "cache", tmp_path / "cache" / "ref_logps"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder


def test_the_cache_key_covers_config_attention_and_versions(tiny_model_dir, monkeypatch):
    import transformers

    from lit_dpo.hf import load_model
    from lit_dpo.reference import ModelReference

    reference = ModelReference(load_model(tiny_model_dir))
    pairs = [Pair([1, 2], [3], [4])]

    def key():
        return reference_cache.pairs_fingerprint(pairs, "w", reference_cache._model_settings(reference))

    first, config = key(), reference.model.config
    reference.model.config = copy.deepcopy(config)
    reference.model.config.rope_theta = 500_000.0  # another RoPE: other log-probs from the same weights
    assert key() != first
    reference.model.config = config
    assert key() == first
    reference.model.set_attn_implementation("eager")
    assert key() != first
    reference.model.set_attn_implementation("sdpa")
    monkeypatch.setattr(transformers, "__version__", "0.0.1")
    assert key() != first


def test_an_unwritable_cache_warns_and_training_goes_on(tiny_dirs, tmp_path, monkeypatch, standard_rows, write_jsonl):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LIT_DPO_CACHE", str(blocker / "cache"))  # no folder can be made under a file
    policy, reference = tiny_dirs
    train = write_jsonl(tmp_path / "train.jsonl", standard_rows(8))
    val = write_jsonl(tmp_path / "val.jsonl", standard_rows(4, 7))
    with pytest.warns(UserWarning, match="could not save the reference log-prob cache .*; training goes on without it"):
        recorder = _fit(policy, reference, train, val, precompute=True, steps=2)
    assert len(recorder.losses) == 2 and not recorder.reference_seen


def test_a_cache_write_that_fails_in_safetensors_warns_and_goes_on(tmp_path, monkeypatch):
    """A full disk surfaces as safetensors' own error, not OSError: the cache is an optimisation, so it warns."""
    from safetensors import SafetensorError

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setenv("LIT_DPO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(reference_cache, "save_file", full_disk)
    with pytest.warns(UserWarning, match="could not save the reference log-prob cache .*StorageFull"):
        reference_cache.save("a" * 64, torch.zeros(3, 2))
    assert reference_cache.load("a" * 64, 3) is None
