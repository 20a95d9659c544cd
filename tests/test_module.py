import lightning as L
import pytest
import torch
from conftest import standard_rows, write_jsonl

from lit_dpo.data import PreferenceDataModule
from lit_dpo.forward import score
from lit_dpo.module import DPOModule


class FrozenReferenceProbe(L.Callback):
    """Records, at every training batch, whether the reference was in eval mode and out of the optimizer."""

    def __init__(self):
        self.checks = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
        in_optimizer = any(id(p) in optimized for p in module.reference.parameters())
        self.checks.append((module.reference.training, in_optimizer, module.policy.training))


def _fit(tmp_path, model_dir, **trainer_kwargs):
    data = PreferenceDataModule(
        path=write_jsonl(tmp_path / "train.jsonl", standard_rows(16)),
        val_path=write_jsonl(tmp_path / "val.jsonl", standard_rows(4, seed=1)),
        batch_size=2,
        tokenizer_name_or_path=model_dir,
    )
    module = DPOModule(model_name_or_path=model_dir, learning_rate=1e-3, warmup_steps=1)
    probe = FrozenReferenceProbe()
    kwargs = dict(max_steps=3, logger=False, enable_progress_bar=False, default_root_dir=tmp_path, callbacks=[probe])
    trainer = L.Trainer(**(kwargs | trainer_kwargs))
    module.configure_model()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer.fit(module, datamodule=data)
    return module, trainer, before, probe


def test_reference_is_frozen_and_policy_trains(tmp_path, tiny_model_dir):
    module, trainer, before, probe = _fit(tmp_path, tiny_model_dir)
    assert probe.checks == [(False, False, True)] * 3  # reference eval + not optimized; policy training
    for name, value in module.state_dict().items():
        if name.startswith("reference."):
            assert torch.equal(value, before[name]), name
    changed = [n for n, v in module.state_dict().items() if n.startswith("policy.") and not torch.equal(v, before[n])]
    assert changed, "the policy did not train"
    assert all(not p.requires_grad for p in module.reference.parameters())


def test_checkpoint_leaves_out_the_reference_and_loads_back(tmp_path, tiny_model_dir):
    module, trainer, _, _ = _fit(tmp_path, tiny_model_dir)
    path = tmp_path / "x.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]  # hparams are primitive: weights_only works
    assert not any(k.startswith("reference.") for k in state)
    assert any(k.startswith("policy.") for k in state)
    fresh = DPOModule(model_name_or_path=tiny_model_dir)
    fresh.configure_model()
    checkpoint = torch.load(path, weights_only=True)
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])  # strict: every policy weight is there
    for name, value in module.policy.state_dict().items():
        assert torch.equal(fresh.policy.state_dict()[name], value)


def test_shared_prefix_masks_work_with_sdpa_and_eager(tiny_model_dir):
    from conftest import make_tokenizer, standard_rows

    from lit_dpo.collate import PaddedCollator, SharedPrefixCollator
    from lit_dpo.tokenization import tokenize_pair

    module = DPOModule(model_name_or_path=tiny_model_dir)
    module.configure_model()
    tokenizer = make_tokenizer()
    pairs = [tokenize_pair(tokenizer, r) for r in standard_rows(5)]
    shared, padded = SharedPrefixCollator(tokenizer.pad_token_id)(pairs), PaddedCollator(tokenizer.pad_token_id)(pairs)
    with torch.no_grad():
        expected = score(module.policy, padded)
        for attention in ("sdpa", "eager"):
            module.policy.set_attn_implementation(attention)
            for got, want in zip(score(module.policy, shared)[:3], expected[:3]):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients(tiny_dirs):
    from conftest import make_tokenizer, standard_rows

    from lit_dpo.collate import SharedPrefixCollator
    from lit_dpo.metrics import PreferenceMetrics
    from lit_dpo.tokenization import tokenize_pair

    tokenizer = make_tokenizer()
    batch = SharedPrefixCollator(tokenizer.pad_token_id)([tokenize_pair(tokenizer, r) for r in standard_rows(4)])
    grads = []
    for checkpointing in (False, True):
        module = DPOModule(
            model_name_or_path=tiny_dirs[0], ref_model_name_or_path=tiny_dirs[1], activation_checkpointing=checkpointing
        )
        module.configure_model()
        module._shared_step(batch, PreferenceMetrics()).backward()
        grads.append([p.grad.clone() for p in module.policy.parameters()])
    assert module.policy.is_gradient_checkpointing
    for with_ac, without in zip(grads[1], grads[0]):
        torch.testing.assert_close(with_ac, without, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # compiles (about 15 s on 2 cores)
def test_compile_gives_the_same_losses_and_gradients(tiny_model_dir):
    from conftest import make_tokenizer, standard_rows

    from lit_dpo.collate import SharedPrefixCollator
    from lit_dpo.tokenization import tokenize_pair

    tokenizer = make_tokenizer()
    collate = SharedPrefixCollator(tokenizer.pad_token_id)
    batches = [collate([tokenize_pair(tokenizer, r) for r in standard_rows(3, seed)]) for seed in (0, 1)]
    results = []
    for compiled in (False, True):
        module = DPOModule(model_name_or_path=tiny_model_dir, compile=compiled)
        module.configure_model()
        assert (module.policy.model.layers[0]._compiled_call_impl is not None) == compiled
        for batch in batches:  # two lengths: one dynamic graph, no recompilation needed for correctness
            loss = module._shared_step(batch, module.train_metrics)
            loss.backward()
        grads = [p.grad.clone() for p in module.policy.parameters()]
        results.append((loss.detach(), module.train_metrics.compute(), grads))
    (loss, metrics, grads), (c_loss, c_metrics, c_grads) = results
    torch.testing.assert_close(c_loss, loss, rtol=1e-5, atol=1e-6)
    for key, value in metrics.items():
        torch.testing.assert_close(c_metrics[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for a, b in zip(c_grads, grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
