"""lit_dpo/module.py: the reference stays frozen and out of checkpoints, and the step's options keep gradients."""

import lightning as L
import pytest
import torch

from lit_dpo.data import PreferenceDataModule
from lit_dpo.metrics import PreferenceMetrics
from lit_dpo.module import DPOModule


class FrozenReferenceProbe(L.Callback):
    """Records, at every training batch, whether the reference was in eval mode and out of the optimizer."""

    def __init__(self):
        self.checks = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
        reference = module.reference.model
        in_optimizer = any(id(p) in optimized for p in reference.parameters())
        self.checks.append((reference.training, in_optimizer, module.policy.training))


@pytest.fixture
def fitted(tmp_path, tiny_model_dir, standard_rows, write_jsonl):
    """A DPOModule after 3 steps with a live reference, its trainer, its state before, and the probe's records."""
    data = PreferenceDataModule(
        path=write_jsonl(tmp_path / "train.jsonl", standard_rows(16)),
        val_path=write_jsonl(tmp_path / "val.jsonl", standard_rows(4, seed=1)),
        batch_size=2,
        tokenizer_name_or_path=tiny_model_dir,
    )
    module = DPOModule(model_name_or_path=tiny_model_dir, learning_rate=1e-3, warmup_steps=1)
    probe = FrozenReferenceProbe()
    trainer = L.Trainer(
        max_steps=3, logger=False, enable_progress_bar=False, default_root_dir=tmp_path, callbacks=[probe]
    )
    module.configure_model()
    before = {k: v.clone() for k, v in module.policy.state_dict().items()}
    reference_before = {k: v.clone() for k, v in module.reference.model.state_dict().items()}
    trainer.fit(module, datamodule=data)
    return module, trainer, before, reference_before, probe


def test_reference_is_frozen_and_policy_trains(fitted):
    module, trainer, before, reference_before, probe = fitted
    assert probe.checks == [(False, False, True)] * 3  # reference eval + not optimized; policy training
    for name, value in module.reference.model.state_dict().items():
        assert torch.equal(value, reference_before[name]), name
    changed = [n for n, v in module.policy.state_dict().items() if not torch.equal(v, before[n])]
    assert changed, "the policy did not train"
    assert all(not p.requires_grad for p in module.reference.model.parameters())


def test_checkpoint_leaves_out_the_reference_and_loads_back(fitted, tmp_path, tiny_model_dir):
    module, trainer, _, _, _ = fitted
    path = tmp_path / "x.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]  # hparams are primitive: weights_only works
    assert not any(k.startswith("reference") for k in state)
    assert any(k.startswith("policy.") for k in state)
    fresh = DPOModule(model_name_or_path=tiny_model_dir)
    fresh.configure_model()
    fresh.load_state_dict(torch.load(path, weights_only=True)["state_dict"])  # strict: every policy weight is there
    for name, value in module.policy.state_dict().items():
        assert torch.equal(fresh.policy.state_dict()[name], value)


def test_reference_follows_the_module_and_a_synced_one_is_checkpointed(dpo_module, tiny_model_dir):
    frozen = dpo_module(model_name_or_path=tiny_model_dir)
    frozen.to(torch.float64)  # as --trainer.precision=64-true does: the reference is cast with the policy
    assert frozen.reference.model.dtype == frozen.policy.dtype == torch.float64
    assert not any(k.startswith("reference") or k.startswith("synced") for k in frozen.state_dict())
    synced = dpo_module(model_name_or_path=tiny_model_dir, ref_sync_steps=2)  # TR-DPO: the reference is training state
    assert any(k.startswith("synced_reference.") for k in synced.state_dict())
    synced.train()
    assert synced.policy.training and not synced.reference.model.training


def test_activation_checkpointing_gives_the_same_gradients(dpo_module, tiny_dirs, make_batch, standard_rows):
    batch = make_batch(standard_rows(4))
    grads = []
    for checkpointing in (False, True):
        module = dpo_module(
            model_name_or_path=tiny_dirs[0], ref_model_name_or_path=tiny_dirs[1], activation_checkpointing=checkpointing
        )
        module.compute_loss(batch, PreferenceMetrics()).backward()
        grads.append([p.grad.clone() for p in module.policy.parameters()])
    assert module.policy.is_gradient_checkpointing
    for with_ac, without in zip(grads[1], grads[0]):
        torch.testing.assert_close(with_ac, without, rtol=1e-5, atol=1e-7)


@pytest.mark.integration  # compiles (about 15 s on 2 cores)
def test_compile_gives_the_same_losses_and_gradients(dpo_module, tiny_model_dir, make_batch, standard_rows):
    batches = [make_batch(standard_rows(3, seed)) for seed in (0, 1)]
    results = []
    for compiled in (False, True):
        module = dpo_module(model_name_or_path=tiny_model_dir, compile=compiled)
        assert (module.policy.model.layers[0]._compiled_call_impl is not None) == compiled
        for batch in batches:  # two lengths: one dynamic graph, no recompilation needed for correctness
            loss = module.compute_loss(batch, module.train_metrics)
            loss.backward()
        grads = [p.grad.clone() for p in module.policy.parameters()]
        results.append((loss.detach(), module.train_metrics.compute(), grads))
    (loss, metrics, grads), (c_loss, c_metrics, c_grads) = results
    torch.testing.assert_close(c_loss, loss, rtol=1e-5, atol=1e-6)
    for key, value in metrics.items():
        torch.testing.assert_close(c_metrics[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for a, b in zip(c_grads, grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_beta_must_be_positive():
    from lit_dpo.errors import InputError

    for beta in (0.0, -0.1):
        with pytest.raises(InputError, match=f"--model.beta must be > 0, got {beta}"):
            DPOModule(beta=beta)
