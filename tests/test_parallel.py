"""lit_dpo/parallel.py, on one process: what is sharded, the decoder layers FSDP wraps, and the prompt order
of gathered generations (2-process FSDP runs are in test_recipes.py and test_resume.py)."""

from types import SimpleNamespace

import torch

from lit_dpo import parallel


def test_a_plain_model_is_not_sharded_and_has_its_decoder_layers(random_llama):
    model = random_llama(64, 0)
    assert not parallel.is_sharded(model) and parallel.full_state_dict(model) is None
    assert len(parallel.decoder_layers(model)) == 2  # the tiny Llama's two decoder layers


def test_gathered_items_come_back_in_prompt_order(monkeypatch):
    assert parallel.gather_in_order(SimpleNamespace(world_size=1), ["a", "b"]) == ["a", "b"]
    shares = [["p0", "p2", "p4"], ["p1", "p3"]]  # rank r holds prompts r, r + 2, ...

    def all_gather_object(out, items):
        out[:] = shares

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    assert parallel.gather_in_order(SimpleNamespace(world_size=2), shares[0]) == ["p0", "p1", "p2", "p3", "p4"]
