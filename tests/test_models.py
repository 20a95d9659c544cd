"""lit_dpo/models.py: which policy and reference a run trains with, decided from its options."""

import inspect
import types

import pytest
import torch

from lit_dpo.errors import InputError
from lit_dpo.losses import build_objective
from lit_dpo.models import MODEL_OPTIONS, ModelSpec, Run, build_models, check_options
from lit_dpo.options import DPOOptions
from lit_dpo.reference import AdapterReference, ModelReference


def test_a_separate_frozen_reference_by_default(tiny_dirs):
    policy, other = tiny_dirs
    models = build_models(ModelSpec(policy, ref_model_name_or_path=other), Run(needs_reference=True, unpaired=False))
    assert isinstance(models.reference, ModelReference) and not models.reference.model.training
    assert not any(p.requires_grad for p in models.reference.model.parameters())
    assert models.reference.fingerprint and models.synced_reference is None and not models.caches_reference


def test_lora_uses_the_base_as_reference_and_a_moving_reference_is_training_state(tiny_model_dir):
    lora = build_models(ModelSpec(tiny_model_dir, lora_r=4), Run(needs_reference=True, unpaired=False))
    assert isinstance(lora.reference, AdapterReference) and lora.reference.fingerprint
    moving = build_models(ModelSpec(tiny_model_dir, reference_moves=True), Run(needs_reference=True, unpaired=False))
    assert moving.synced_reference is moving.reference.model


def test_reference_free_losses_load_no_reference(tiny_model_dir):
    assert build_models(ModelSpec(tiny_model_dir), Run(needs_reference=False, unpaired=False)).reference is None


def test_online_pairs_cannot_be_precomputed(tiny_model_dir):
    with pytest.raises(InputError, match="precompute_ref_log_probs needs every pair before training"):
        build_models(ModelSpec(tiny_model_dir, precompute_ref_log_probs=True), Run(True, False, online=True))


def test_every_model_option_is_a_module_option():
    assert set(MODEL_OPTIONS) <= set(inspect.signature(DPOOptions).parameters)


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"beta": 0.0}, "--model.beta must be > 0"),
        ({"sync_steps": 2, "precompute": True}, "cannot use precompute_ref_log_probs"),
        ({"sync_epochs": 1, "loss": "simpo"}, "ref_sync_epochs has no effect with a reference-free loss_type"),
    ],
)
def test_options_that_cannot_work_together_are_refused(options, problem):
    objective = build_objective(options.get("loss", "sigmoid"))
    with pytest.raises(InputError, match=problem):
        check_options(objective, options.get("beta", 0.1), options.get("precompute"), options.get("sync_steps", 0),
                      0.6, options.get("sync_epochs", 0))  # fmt: skip


def test_flex_attention_is_refused_for_training_on_a_cpu(tiny_model_dir):
    fitting = types.SimpleNamespace(state=types.SimpleNamespace(fn="fit"), strategy=types.SimpleNamespace(
        root_device=torch.device("cpu")))  # fmt: skip
    with pytest.raises(InputError, match="flex_attention trains on GPUs only"):
        build_models(ModelSpec(tiny_model_dir, attn_implementation="flex_attention"), Run(True, False, trainer=fitting))
    scoring = build_models(ModelSpec(tiny_model_dir, attn_implementation="flex_attention"), Run(True, False))
    assert scoring.policy.config._attn_implementation == "flex_attention"  # no grad needed: fine on a CPU


def test_a_tied_embedding_gets_the_same_gradient_from_sparse_rows(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    from lit_dpo.hf import sparse_tied_embedding

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)  # fmt: skip
    ids = torch.tensor([[5, 7, 5, 9, 11]])
    grads = []
    for sparse in (False, True):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        assert sparse_tied_embedding(model) if sparse else True
        model(input_ids=ids, labels=ids).loss.backward()
        weight = model.get_input_embeddings().weight
        assert not weight.grad.is_sparse  # the head's dense gradient plus the embedding's rows
        grads.append(weight.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-7)
    untied = LlamaForCausalLM(LlamaConfig(**{**config.to_dict(), "tie_word_embeddings": False}))
    assert not sparse_tied_embedding(untied) and not untied.get_input_embeddings().sparse


def test_a_cpu_fit_scores_packed_rows_by_example_unless_compiled(tiny_model_dir):
    from lit_dpo.scoring.blocked import BLOCKED_SDPA

    plain = build_models(ModelSpec(tiny_model_dir), Run(True, False))
    assert plain.policy.config._attn_implementation == BLOCKED_SDPA
    assert plain.reference.model.config._attn_implementation == BLOCKED_SDPA
    compiled = build_models(ModelSpec(tiny_model_dir, compile=True), Run(True, False))  # recompiles per split
    assert compiled.policy.config._attn_implementation == "sdpa"
    assert compiled.reference.model.config._attn_implementation == "sdpa"
