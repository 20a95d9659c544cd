"""lit_dpo/optim.py: AdamW stepped in the backward makes the same updates as AdamW, and resumes either way."""

import lightning as L
import pytest
import torch

from lit_dpo.data import PreferenceDataModule
from lit_dpo.errors import InputError
from lit_dpo.module import DPOModule
from lit_dpo.optim import AdamWInBackward, in_backward, lr_lambda


def _train(model, optimizer, steps, lr_by_step):
    for step in range(steps):
        optimizer.param_groups[0]["lr"] = lr_by_step[step]
        inputs = torch.arange(12).reshape(2, 6) % 50 + step
        loss_of = lambda: model(input_ids=inputs, labels=inputs).loss  # noqa: E731
        optimizer.zero_grad()
        optimizer.step(lambda: loss_of().backward())


@pytest.mark.parametrize("fused", [True, False])
def test_same_updates_as_adamw_and_no_gradient_left(fused, random_llama):
    make_model = random_llama
    plain, hooked = make_model(64, 0), make_model(64, 0)
    kwargs = dict(lr=1e-2, weight_decay=0.1, fused=fused)
    optimizers = torch.optim.AdamW(plain.parameters(), **kwargs), AdamWInBackward(list(hooked.parameters()), **kwargs)
    for model, optimizer in zip((plain, hooked), optimizers):
        _train(model, optimizer, 3, [1e-2, 5e-3, 2e-2])  # the schedule's lr reaches every parameter's update
    for (name, a), b in zip(plain.named_parameters(), hooked.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
        assert b.grad is None
    assert not torch.equal(plain.model.embed_tokens.weight, make_model(64, 0).model.embed_tokens.weight)


def test_state_dict_is_adamw_s_and_resumes_either_way(random_llama):
    plain, hooked = random_llama(64, 0), random_llama(64, 0)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    hooked_opt = AdamWInBackward(list(hooked.parameters()), lr=1e-2)
    _train(plain, plain_opt, 2, [1e-2] * 2)
    _train(hooked, hooked_opt, 2, [1e-2] * 2)
    saved_plain, saved_hooked = plain_opt.state_dict(), hooked_opt.state_dict()
    assert saved_hooked["state"].keys() == saved_plain["state"].keys()
    for index, state in saved_plain["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(saved_hooked["state"][index][key], value, rtol=0, atol=0)
    # swap: each model continues with the other optimizer kind, loaded from the other's state
    resumed_plain = torch.optim.AdamW(hooked.parameters(), lr=1e-2)
    resumed_plain.load_state_dict(saved_hooked)
    hooked_opt.remove_hooks()
    resumed_hooked = AdamWInBackward(list(plain.parameters()), lr=1e-2)
    resumed_hooked.load_state_dict(saved_plain)
    _train(hooked, resumed_plain, 1, [1e-2])
    _train(plain, resumed_hooked, 1, [1e-2])
    for a, b in zip(plain.parameters(), hooked.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _Trainer:
    def __init__(self, world_size=1, accumulate_grad_batches=1, gradient_clip_val=None, precision="32-true"):
        self.world_size, self.accumulate_grad_batches = world_size, accumulate_grad_batches
        self.gradient_clip_val, self.precision = gradient_clip_val, precision


def test_in_backward_only_where_exact():
    assert in_backward(_Trainer(), None) and not in_backward(_Trainer(), False)
    for blocker in ({"world_size": 2}, {"accumulate_grad_batches": 2}, {"gradient_clip_val": 1.0},
                    {"precision": "16-mixed"}):  # fmt: skip
        assert not in_backward(_Trainer(**blocker), None)
        with pytest.raises(InputError, match="optimizer_in_backward does not work"):
            in_backward(_Trainer(**blocker), True)


def _fit(model_dir, train, in_bwd, steps=3, fits=1):
    L.seed_everything(0)
    module = DPOModule(model_name_or_path=model_dir, learning_rate=1e-3, warmup_steps=0, optimizer_in_backward=in_bwd)
    data = PreferenceDataModule(path=train, val_split=0, tokenizer_name_or_path=model_dir, shuffle=False)
    for _ in range(fits):  # a second fit on the same module trains on: its old optimizer must not step as well
        trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
        trainer.fit(module, data)
    return module, trainer


def test_fit_uses_it_by_default_with_the_same_result(tiny_model_dir, tmp_path, standard_rows, write_jsonl):
    train = write_jsonl(tmp_path / "train.jsonl", standard_rows(16))
    hooked, trainer = _fit(tiny_model_dir, train, None, fits=2)
    assert isinstance(trainer.optimizers[0], AdamWInBackward)
    plain, trainer = _fit(tiny_model_dir, train, False, fits=2)
    assert type(trainer.optimizers[0]) is torch.optim.AdamW
    for (name, a), b in zip(plain.policy.named_parameters(), hooked.policy.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)


def test_lr_warmup_then_schedules():
    assert [lr_lambda(4, "constant", lambda: 10)(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    linear, cosine = lr_lambda(2, "linear", lambda: 6), lr_lambda(2, "cosine", lambda: 6)
    assert [linear(s) for s in range(2, 7)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert [round(cosine(s), 6) for s in (2, 4, 6)] == [1.0, 0.5, 0.0]


def test_a_non_finite_gradient_never_reaches_its_weights(random_llama):
    model = random_llama(64, 0)
    names = [name for name, _ in model.named_parameters()]
    optimizer = AdamWInBackward(list(model.parameters()), names, lr=1e-2, fused=True)
    bad = dict(model.named_parameters())["model.layers.0.mlp.up_proj.weight"]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    bad.register_hook(lambda grad: grad * float("nan"))
    _train(model, optimizer, 1, [1e-2])
    assert optimizer.nonfinite_parameters() == ["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(bad, before["model.layers.0.mlp.up_proj.weight"])  # not updated, not NaN
    assert optimizer.state[bad]["step"] == 0
    assert not torch.equal(model.model.embed_tokens.weight, before["model.embed_tokens.weight"])  # the rest trained
    assert optimizer.nonfinite_parameters() == []  # reset once read
