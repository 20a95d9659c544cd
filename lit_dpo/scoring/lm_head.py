"""The LM head on the scored positions only: per-token log-probs from ``(M, V)`` logits, or in chunks of positions
so that only ``(C, V)`` logits exist at a time, forward and backward (a custom autograd function that recomputes
each chunk's logits in the backward instead of keeping them).

V is 49,152 for SmolLM2 and 151,936 for Qwen2.5: 4,096 scored tokens in fp32 are 0.8 GB and 2.5 GB of logits,
and the plain path holds two tensors of that size at its peak (the logits, and logsumexp's temporary in the
forward or their gradient in the backward), and the head's own output besides when it computes in half precision.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, NamedTuple, Optional

import torch
from torch import Tensor

from lit_dpo.scoring.gemm import linear

CHUNK_ELEMENTS = 2**24  # logits per chunk: 64 MiB in fp32; C = CHUNK_ELEMENTS // V positions
# on a GPU, 1 GiB chunks: each chunk reads the whole (V, H) head and adds a (V, H) gradient, so chunks of a few
# hundred positions would make that traffic, not the matmuls, the cost (a 128k vocabulary: 130 positions a chunk)
GPU_CHUNK_ELEMENTS = 2**28
# causal LMs whose forward returns the LM head's output as the logits, untouched (no softcapping or scaling after
# the head): for them the head may return per-token scores computed in chunks
PLAIN_HEAD_MODELS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}


class TokenScores(NamedTuple):
    logps: Tensor  # (M,) log p(target), differentiable
    mean_logits: Tensor  # (M,) the vocabulary-mean logit, float, no gradient
    wpo: Optional[Tensor] = None  # (M,) log p(target) - log sum_v p(v)^2, no gradient (WPO's weights)


def chunk_rows(vocab_size: int, device: Optional[torch.device] = None) -> int:
    """Positions per chunk: ``$LIT_DPO_CHUNK_ELEMENTS`` (default ``CHUNK_ELEMENTS``, ``GPU_CHUNK_ELEMENTS`` on a
    GPU) logits over ``vocab_size``."""
    default = GPU_CHUNK_ELEMENTS if device is not None and device.type == "cuda" else CHUNK_ELEMENTS
    return max(1, int(os.environ.get("LIT_DPO_CHUNK_ELEMENTS", default)) // vocab_size)


def token_scores(logits: Tensor, targets: Tensor, wpo: bool = False) -> TokenScores:
    """Scores from logits ``(M, V)`` of the positions predicting ``targets`` ``(M,)``."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half-precision logsumexp loses digits
    # gather - logsumexp avoids materialising a second (M, V) tensor as log_softmax would
    normalizer = torch.logsumexp(logits.detach(), dim=-1)  # (M,)
    logps = _TargetLogps.apply(logits, targets, normalizer)
    with torch.no_grad():
        mean_logits = logits.mean(-1)
        wpo_terms = _wpo_terms(logps, logits, normalizer) if wpo else None
    return TokenScores(logps, mean_logits, wpo_terms)


def forward_autocast(tensor: Tensor) -> torch.autocast:
    """The autocast state a custom autograd function's forward runs under, on ``tensor``'s device: its backward
    runs outside autocast, and re-enters this so that its matmuls have the forward's precision."""
    device = tensor.device.type
    return torch.autocast(device, dtype=torch.get_autocast_dtype(device), enabled=torch.is_autocast_enabled(device))


class _TargetLogps(torch.autograd.Function):
    """``logits[m, targets[m]] - normalizer[m]`` with a one-buffer backward: the gradient ``onehot - softmax`` is
    built in place in one (M, V) tensor, where autograd's gather and logsumexp backwards fill, subtract,
    exponentiate, multiply and add four (M, V) tensors (0.1 s of a 2.2 s CPU step on SmolLM2)."""

    @staticmethod
    def forward(ctx, logits, targets, normalizer):  # type: ignore[override]
        ctx.save_for_backward(logits, targets, normalizer)
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - normalizer

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        logits, targets, normalizer = ctx.saved_tensors
        return _grad_of_target_logps(torch.sub(logits, normalizer[:, None]), targets, grad), None, None


def _grad_of_target_logps(log_probs: Tensor, targets: Tensor, grad: Tensor) -> Tensor:
    """The gradient ``grad * (onehot(targets) - softmax)`` w.r.t. the logits, built in place in ``log_probs``
    ``(M, V)`` (logits minus their normaliser, a tensor of the caller's own)."""
    grad_logits = log_probs.exp_().mul_(-grad[:, None])  # -g * softmax
    return grad_logits.scatter_add_(-1, targets[:, None], grad[:, None].to(grad_logits.dtype))  # + g at the target


def _wpo_terms(logps: Tensor, logits: Tensor, normalizer: Tensor) -> Tensor:
    return logps.detach() - (torch.logsumexp(2 * logits, dim=-1) - 2 * normalizer)  # minus log sum_v p(v)^2


def chunked_token_scores(
    hidden: Tensor, weight: Tensor, bias: Optional[Tensor], targets: Tensor, wpo: bool = False, into_grad: bool = False
) -> TokenScores:
    """The same scores as ``token_scores(hidden @ weight.T + bias, targets, wpo)``, for hidden states ``(M, H)``
    and a head ``weight`` ``(V, H)``, with at most ``chunk_rows(V)`` positions' logits alive at once.
    ``into_grad``: the backward sums the head's gradient into ``weight.grad`` itself (an fp32 head tied to a
    sparse embedding, as ``_TiedHeadLinear`` does) instead of passing it on to autograd."""
    logps, mean_logits, wpo_terms = _ChunkedLogps.apply(hidden, weight, bias, targets, wpo, into_grad)
    return TokenScores(logps, mean_logits, wpo_terms if wpo else None)


def _chunk_logits(hidden: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return linear(hidden, weight, bias)  # (C, V), in autocast's dtype when it is on


class _ChunkedLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, wpo, into_grad):  # type: ignore[override]
        rows = chunk_rows(weight.shape[0], hidden.device)
        outputs: list[list[Tensor]] = [[], [], []]
        for start in range(0, hidden.shape[0], rows):
            logits = _chunk_logits(hidden[start : start + rows], weight, bias)  # (C, V)
            ctx.logits_dtype = logits.dtype
            scores = token_scores(logits, targets[start : start + rows], wpo)
            outputs[0].append(scores.logps)
            outputs[1].append(scores.mean_logits)
            outputs[2].append(scores.wpo if wpo else scores.logps.new_zeros(0))
        logps, mean_logits, wpo_terms = (torch.cat(parts) for parts in outputs)
        ctx.save_for_backward(hidden, weight, bias, targets, logps)
        ctx.autocast = forward_autocast(hidden)
        ctx.into_grad = into_grad
        ctx.mark_non_differentiable(mean_logits, wpo_terms)
        return logps, mean_logits, wpo_terms

    @staticmethod
    def backward(ctx, grad_logps, *_):  # type: ignore[override]
        hidden, weight, bias, targets, logps = ctx.saved_tensors
        rows = chunk_rows(weight.shape[0], hidden.device)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = weight.grad if ctx.into_grad else None  # fp32, summed over the chunks
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None else None
        with ctx.autocast:  # the forward's matmul precision
            for start in range(0, hidden.shape[0], rows):
                h, g, t = hidden[start : start + rows], grad_logps[start : start + rows], targets[start : start + rows]
                logits = _chunk_logits(h, weight, bias).float()  # recomputed, (C, V)
                # the normaliser from the saved log p(t); in place: one (C, V)
                normalizer = logits.gather(-1, t[:, None]).squeeze(-1) - logps[start : start + rows]
                grad_logits = _grad_of_target_logps(logits.sub_(normalizer[:, None]), t, g).to(ctx.logits_dtype)
                grad_hidden[start : start + rows] = grad_logits @ weight
                grad_weight = _add_product(grad_weight, grad_logits.T, h, torch.float32)
                if grad_bias is not None:
                    grad_bias += grad_logits.float().sum(0)
        grad_bias = grad_bias.to(bias.dtype) if grad_bias is not None else None
        if ctx.into_grad:  # the embedding's rows are added into it when they arrive
            weight.grad = grad_weight
            return grad_hidden, None, grad_bias, None, None, None
        return grad_hidden, grad_weight.to(weight.dtype), grad_bias, None, None, None


def _add_product(total: Optional[Tensor], a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    """``total + a @ b``: a new tensor of ``dtype`` when ``total`` is None, else summed into ``total`` in place,
    without a (V, H) temporary when the dtypes agree (``addmm_``)."""
    if total is None:
        return (a @ b).to(dtype)
    if a.dtype == b.dtype == total.dtype:
        return total.addmm_(a, b)
    return total.add_(a @ b)


def chunks_logits(model: torch.nn.Module, num_positions: int) -> bool:
    """Whether the scored positions' log-probs are computed in chunks for this model and number of positions."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps the model
    head = model.get_output_embeddings()
    name = type(base).__name__.removeprefix("FSDP")  # FSDP2's fully_shard subclasses the model's class
    plain = name in PLAIN_HEAD_MODELS and type(head) is torch.nn.Linear
    return plain and worth_chunking(num_positions, chunk_rows(head.out_features))


def worth_chunking(num_positions: int, positions_per_chunk: int) -> bool:
    # below 4 chunks the (M, V) logits are small (fp32: under 256 MiB by default) and recomputing them in the
    # backward would cost time for little memory
    return num_positions > 4 * positions_per_chunk


@contextlib.contextmanager
def head_on_positions(
    model: torch.nn.Module, index: Tensor, targets: Tensor, wpo: bool = False
) -> Iterator[dict[str, TokenScores]]:
    """Make the LM head score only the flat positions ``index`` of its ``(rows, T, H)`` input against
    ``targets`` ``(M,)``; when it computes the scores itself they land in the yielded dict under ``"scores"``.

    The model's own forward still runs (so FSDP gathers its parameters, and softcapping or logit scaling after
    the head apply to the ``(M, V)`` logits as usual); for the models of ``PLAIN_HEAD_MODELS`` with many
    positions the head instead computes the scores in chunks and returns an empty ``(M, 0)`` tensor.
    """
    head = model.get_output_embeddings()
    project, scored = head.forward, {}
    chunk = chunks_logits(model, index.numel())
    embedding = model.get_input_embeddings()
    sums_in_place = type(head) is torch.nn.Linear and isinstance(embedding, torch.nn.Embedding) and embedding.sparse

    def forward(hidden: Tensor) -> Tensor:
        positions = hidden.flatten(0, 1)[index]  # (M, H)
        if chunk:
            into_grad = sums_in_place and head.weight.dtype == torch.float32  # (bf16 weights: summed in fp32)
            scored["scores"] = chunked_token_scores(positions, head.weight, head.bias, targets, wpo, into_grad)
            return positions.new_empty(positions.shape[0], 0)
        if sums_in_place:
            return _TiedHeadLinear.apply(positions, head.weight, head.bias)
        return project(positions)

    own = vars(head).get("forward")  # a forward of the layer's own (``use_onednn_linears``), else the class's
    head.forward = forward
    try:
        yield scored
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own


class _TiedHeadLinear(torch.autograd.Function):
    """``linear(x, weight, bias)`` for a head whose weight is also the input embedding with sparse gradients
    (``lit_dpo.hf.sparse_tied_embedding``). Autograd would hold the head's dense (V, H) gradient until the
    embedding's sparse rows arrive and then add the two out of place: a second (V, H) tensor at the end of every
    backward, where a step's RSS peaks (SmolLM2: 108 MiB). This backward adds the head's gradient into
    ``weight.grad`` itself and passes none on, so the embedding's rows are added to it in place when they arrive
    (the weight's gradient hooks still run once, on the sum). Valid because the embedding always comes after
    the head in the backward of the same graph."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.autocast = forward_autocast(x)
        return linear(x, weight, bias)  # (M, V)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        with ctx.autocast:  # the forward's matmul precision
            grad_x = grad @ weight.to(grad.dtype)
            weight.grad = _add_product(weight.grad, grad.T, x.to(grad.dtype), weight.dtype)  # (V, H)
        grad_bias = grad.sum(0).to(weight.dtype) if ctx.has_bias else None
        return grad_x.to(x.dtype), None, grad_bias
