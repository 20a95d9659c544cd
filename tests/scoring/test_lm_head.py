"""lit_dpo/scoring/lm_head.py: chunked LM-head scores equal the plain (M, V) path, values and gradients."""

import pytest
import torch

from lit_dpo.hf import load_model
from lit_dpo.scoring import score_sequences
from lit_dpo.scoring.gemm import use_onednn_linears
from lit_dpo.scoring.lm_head import chunked_token_scores, chunks_logits, token_scores


def _inputs(dtype=torch.float32, bias=True):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(23, 16, generator=g, dtype=dtype, requires_grad=True)  # M = 23: chunks of 3, then 2
    weight = torch.randn(40, 16, generator=g, dtype=dtype, requires_grad=True)  # V = 40
    b = torch.randn(40, generator=g, dtype=dtype, requires_grad=True) if bias else None
    targets = torch.randint(0, 40, (23,), generator=g)
    return hidden, weight, b, targets


@pytest.mark.parametrize("bias", [True, False])
def test_chunked_equals_plain_values_and_gradients(monkeypatch, bias):
    monkeypatch.setenv("LIT_DPO_CHUNK_ELEMENTS", str(3 * 40))
    hidden, weight, b, targets = _inputs(bias=bias)
    upstream = torch.linspace(-1, 2, 23)  # a gradient that differs per position
    results = []
    for fn in (lambda: token_scores(torch.nn.functional.linear(hidden, weight, b), targets, wpo=True),
               lambda: chunked_token_scores(hidden, weight, b, targets, wpo=True)):  # fmt: skip
        out = fn()
        grads = torch.autograd.grad((out.logps * upstream).sum(), [hidden, weight] + ([b] if bias else []))
        results.append((out, grads))
    (plain, plain_grads), (chunks, chunk_grads) = results
    for name in ("logps", "mean_logits", "wpo"):
        torch.testing.assert_close(getattr(chunks, name), getattr(plain, name), rtol=1e-5, atol=1e-6, msg=name)
    for got, want in zip(chunk_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not chunks.mean_logits.requires_grad and not chunks.wpo.requires_grad


def test_chunked_under_bf16_autocast_matches_plain(monkeypatch):
    monkeypatch.setenv("LIT_DPO_CHUNK_ELEMENTS", str(3 * 40))
    hidden, weight, b, targets = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = token_scores(torch.nn.functional.linear(hidden, weight, b), targets)
        chunks = chunked_token_scores(hidden, weight, b, targets)
    grads = [torch.autograd.grad(out.logps.sum(), [hidden, weight, b]) for out in (plain, chunks)]
    torch.testing.assert_close(chunks.logps, plain.logps, rtol=0, atol=0)  # the same bf16 matmul, then fp32
    for got, want in zip(*grads):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)  # bf16 products, summed in another order


@pytest.mark.parametrize("layout", ["padded", "shared"])
def test_score_chunks_a_plain_head_model_with_the_same_results(
    tiny_model_dir, monkeypatch, layout, make_batch, standard_rows
):
    batch = make_batch(standard_rows(4), layout)
    model = load_model(tiny_model_dir, "float32", False)
    use_onednn_linears(model, torch.device("cpu"))  # as a fit has it: both paths' matmuls in the same kernels
    results = []
    for elements in (None, 7 * 300):  # the plain path, then chunks of 7 positions over V = 300
        if elements:
            monkeypatch.setenv("LIT_DPO_CHUNK_ELEMENTS", str(elements))
        assert chunks_logits(model, batch.completions.index.numel()) == bool(elements)
        model.zero_grad()
        scores = score_sequences(model, batch, with_prompt=True, ld_alpha=0.5, wpo=True)
        (scores.logps * torch.arange(1.0, 13.0)).sum().backward()
        results.append((scores, [p.grad.clone() for p in model.parameters()]))
    (plain, plain_grads), (chunks, chunk_grads) = results
    for a, b in zip(chunks, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(chunk_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # sums over positions in another order


def test_token_scores_gradient_is_autograds():
    torch.manual_seed(0)
    logits = torch.randn(6, 50, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1, 7, 7, 49, 0, 3])
    weights = torch.randn(6, dtype=torch.float64)
    (token_scores(logits, targets).logps * weights).sum().backward()
    mine, logits.grad = logits.grad, None
    (torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1) * weights).sum().backward()
    torch.testing.assert_close(mine, logits.grad)
    assert torch.autograd.gradcheck(lambda x: token_scores(x, targets).logps, (logits.detach().requires_grad_(),))


@pytest.mark.parametrize("chunked", [False, True])
def test_a_sparse_tied_head_adds_the_embedding_rows_into_its_own_gradient(tokenizer, make_batch, standard_rows,
                                                                          monkeypatch, chunked):  # fmt: skip
    from transformers import LlamaConfig, LlamaForCausalLM

    from lit_dpo.hf import sparse_tied_embedding
    from lit_dpo.scoring import lm_head, score_sequences

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)  # fmt: skip
    batch = make_batch(standard_rows(3), "packed")
    if chunked:  # chunks of 2 positions
        monkeypatch.setenv("LIT_DPO_CHUNK_ELEMENTS", str(2 * len(tokenizer)))
    head_grads, calls = [], []
    function = lm_head._ChunkedLogps if chunked else lm_head._TiedHeadLinear
    apply = function.apply
    monkeypatch.setattr(function, "apply", lambda *a: calls.append(a[-1] if chunked else True) or apply(*a))
    for sparse in (False, True):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        assert sparse_tied_embedding(model) if sparse else True
        weight = model.get_input_embeddings().weight
        seen = []
        weight.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.clone()))  # once, on the sum
        for _ in range(2):  # the second backward accumulates
            score_sequences(model, batch).logps.sum().backward()
        assert len(seen) == 2 and not weight.grad.is_sparse
        head_grads.append((seen[0], weight.grad))
    assert calls == [False, False, True, True] if chunked else len(calls) == 2  # the sparse-tied model's sums in place
    for got, want in zip(head_grads[1], head_grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
