"""lit_dpo/scoring/lean.py: the lean SwiGLU MLP and RMSNorm backwards give autograd's gradients."""

import copy

import torch

from lit_dpo.lora import add_adapters
from lit_dpo.scoring.lean import use_lean_blocks


def _gradients(model, ids, autocast=False):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


def test_lean_blocks_give_autograd_s_gradients(random_llama):
    plain = random_llama(64, 0)
    with torch.no_grad():  # norm weights away from 1, so their gradients and scaling are exercised
        for name, p in plain.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.3)
    lean = copy.deepcopy(plain)
    assert use_lean_blocks(lean) == 2 * 2 + 2 + 1  # per layer an MLP and two norms, and the final norm
    ids = torch.randint(0, 64, (2, 11))
    for autocast, tolerance in ((False, 1e-6), (True, 2e-2)):  # bf16 autocast: its own rounding
        (want_loss, want), (got_loss, got) = _gradients(plain, ids, autocast), _gradients(lean, ids, autocast)
        torch.testing.assert_close(got_loss, want_loss, rtol=tolerance, atol=tolerance)
        for name, grad in want.items():
            assert got[name].dtype == grad.dtype
            torch.testing.assert_close(got[name], grad, rtol=tolerance * 10, atol=tolerance, msg=name)


def test_lora_projections_keep_autograd_s_mlp(random_llama):
    model = add_adapters(random_llama(64, 0), 4, 8, 0.0, "all-linear")
    assert use_lean_blocks(model) == 2 * 2 + 1  # the norms only: the MLPs' projections are LoRA layers


def test_a_one_process_fit_uses_them_unless_compiled(dpo_module, tiny_model_dir):
    lean = dpo_module(model_name_or_path=tiny_model_dir).policy.model.layers[0]
    assert "forward" in vars(lean.mlp) and "forward" in vars(lean.input_layernorm)  # the lean forwards
    compiled = dpo_module(model_name_or_path=tiny_model_dir, compile=True).policy.model.layers[0]
    assert "forward" not in vars(compiled.mlp) and "forward" not in vars(compiled.input_layernorm)
