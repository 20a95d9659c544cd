"""lit_dpo/scoring/gemm.py: linear layers through oneDNN on CPUs give torch's values and gradients."""

import copy

import pytest
import torch

from lit_dpo.scoring import gemm
from lit_dpo.scoring.lm_head import head_on_positions

needs_onednn = pytest.mark.skipif(not gemm.ENABLED, reason="oneDNN's linear kernel is not in this PyTorch build")


def _values_and_grads(fn, *tensors):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
    return out, [leaf.grad for leaf in leaves]


@needs_onednn
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_torch_forward_and_backward(bias):
    torch.manual_seed(0)
    x, weight = torch.randn(2, 7, 24), torch.randn(40, 24)  # (rows, T, in), (out, in)
    tensors = (x, weight) + ((torch.randn(40),) if bias else ())
    got, got_grads = _values_and_grads(gemm.linear, *tensors)
    want, want_grads = _values_and_grads(torch.nn.functional.linear, *tensors)
    assert type(got.grad_fn).__name__ == "_LinearBackward"  # oneDNN's path, not a silent fallback
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # no graph: the kernel alone
        torch.testing.assert_close(gemm.linear(*tensors), want, rtol=1e-5, atol=1e-5)


def test_other_dtypes_autocast_and_switch_off_keep_torch_s_path(monkeypatch):
    x, weight = torch.randn(3, 8), torch.randn(4, 8)
    half = gemm.linear(x.bfloat16(), weight.bfloat16())
    assert half.dtype == torch.bfloat16 and torch.equal(
        half, torch.nn.functional.linear(x.bfloat16(), weight.bfloat16())
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gemm.linear(x, weight).dtype == torch.bfloat16  # autocast's cast, as torch's linear does
    monkeypatch.setattr(gemm, "ENABLED", False)
    out = gemm.linear(x.requires_grad_(True), weight)
    assert type(out.grad_fn).__name__ != "_LinearBackward"
    assert gemm.use_onednn_linears(torch.nn.Linear(8, 4), torch.device("cpu")) == 0


@needs_onednn
def test_a_model_s_linears_give_the_same_logprobs_and_keep_them_after_scoring(random_llama):
    plain = random_llama(64, 0)
    model = copy.deepcopy(plain)
    assert gemm.use_onednn_linears(model, torch.device("cuda")) == 0  # GPUs: PyTorch's kernels
    assert gemm.use_onednn_linears(model, torch.device("cpu"), compiled=True) == 0  # inductor's
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert gemm.use_onednn_linears(model, torch.device("cpu")) == linears == 2 * 7 + 1  # q k v o gate up down, head
    ids = torch.randint(0, 64, (2, 9))
    torch.testing.assert_close(model(ids).logits, plain(ids).logits, rtol=1e-5, atol=1e-5)
    head = model.get_output_embeddings()
    with head_on_positions(model, torch.tensor([3, 4]), torch.tensor([1, 2])):
        model(ids)
    assert vars(head)["forward"].__func__ is gemm._linear_forward  # the scoring put the layer's own forward back


def test_a_one_process_fit_uses_them_unless_compiled(dpo_module, tiny_model_dir):
    head = dpo_module(model_name_or_path=tiny_model_dir).policy.model.layers[0].self_attn.q_proj
    assert ("forward" in vars(head)) == gemm.ENABLED
    compiled = dpo_module(model_name_or_path=tiny_model_dir, compile=True).policy.model.layers[0].self_attn.q_proj
    assert "forward" not in vars(compiled)
