"""Per-token scores of the LM head on the scored positions: from ``(M, V)`` logits, or in chunks of positions
so that only ``(C, V)`` logits exist at a time, forward and backward (a custom autograd function that
recomputes each chunk's logits in the backward instead of keeping them).

V is 49,152 for SmolLM2 and 151,936 for Qwen2.5: 4,096 scored tokens in fp32 are 0.8 GB and 2.5 GB of logits,
and the plain path holds about three tensors of that size at its peak (logits, their gradient, softmax).
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import torch
from torch import Tensor

CHUNK_ELEMENTS = 2**24  # logits per chunk: 64 MiB in fp32; C = CHUNK_ELEMENTS // V positions


class TokenScores(NamedTuple):
    logps: Tensor  # (M,) log p(target), differentiable
    mean_logits: Tensor  # (M,) the vocabulary-mean logit, float, no gradient
    wpo: Optional[Tensor] = None  # (M,) log p(target) - log sum_v p(v)^2, no gradient (WPO's weights)


def chunk_rows(vocab_size: int) -> int:
    """Positions per chunk: ``$LIT_DPO_CHUNK_ELEMENTS`` (default ``CHUNK_ELEMENTS``) logits over ``vocab_size``."""
    return max(1, int(os.environ.get("LIT_DPO_CHUNK_ELEMENTS", CHUNK_ELEMENTS)) // vocab_size)


def from_logits(logits: Tensor, targets: Tensor, wpo: bool = False) -> TokenScores:
    """Scores from logits ``(M, V)`` of the positions predicting ``targets`` ``(M,)``."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half-precision logsumexp loses digits
    # gather - logsumexp avoids materialising a second (M, V) tensor as log_softmax would
    normalizer = torch.logsumexp(logits, dim=-1)  # (M,)
    logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - normalizer
    with torch.no_grad():
        mean_logits = logits.mean(-1)
        wpo_terms = _wpo_terms(logps, logits, normalizer) if wpo else None
    return TokenScores(logps, mean_logits, wpo_terms)


def _wpo_terms(logps: Tensor, logits: Tensor, normalizer: Tensor) -> Tensor:
    return logps.detach() - (torch.logsumexp(2 * logits, dim=-1) - 2 * normalizer)  # minus log sum_v p(v)^2


def chunked(hidden: Tensor, weight: Tensor, bias: Optional[Tensor], targets: Tensor, wpo: bool = False) -> TokenScores:
    """The same scores as ``from_logits(hidden @ weight.T + bias, targets, wpo)``, for hidden states ``(M, H)``
    and a head ``weight`` ``(V, H)``, with at most ``chunk_rows(V)`` positions' logits alive at once."""
    logps, mean_logits, wpo_terms = _ChunkedLogps.apply(hidden, weight, bias, targets, wpo)
    return TokenScores(logps, mean_logits, wpo_terms if wpo else None)


def _chunk_logits(hidden: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return torch.nn.functional.linear(hidden, weight, bias)  # (C, V), in autocast's dtype when it is on


class _ChunkedLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, wpo):  # type: ignore[override]
        rows = chunk_rows(weight.shape[0])
        outputs: list[list[Tensor]] = [[], [], []]
        for start in range(0, hidden.shape[0], rows):
            logits = _chunk_logits(hidden[start : start + rows], weight, bias)  # (C, V)
            ctx.logits_dtype = logits.dtype
            scores = from_logits(logits, targets[start : start + rows], wpo)
            outputs[0].append(scores.logps)
            outputs[1].append(scores.mean_logits)
            outputs[2].append(scores.wpo if wpo else scores.logps.new_zeros(0))
        logps, mean_logits, wpo_terms = (torch.cat(parts) for parts in outputs)
        ctx.save_for_backward(hidden, weight, bias, targets, logps)
        device = hidden.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.mark_non_differentiable(mean_logits, wpo_terms)
        return logps, mean_logits, wpo_terms

    @staticmethod
    def backward(ctx, grad_logps, *_):  # type: ignore[override]
        hidden, weight, bias, targets, logps = ctx.saved_tensors
        device, enabled, dtype = ctx.autocast
        rows = chunk_rows(weight.shape[0])
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None else None
        with torch.autocast(device, dtype=dtype, enabled=enabled):  # the forward's matmul precision
            for start in range(0, hidden.shape[0], rows):
                h, g, t = hidden[start : start + rows], grad_logps[start : start + rows], targets[start : start + rows]
                logits = _chunk_logits(h, weight, bias).float()  # recomputed, (C, V)
                # d log p(t) / d logits = onehot(t) - softmax; the normaliser from the saved log p(t)
                normalizer = logits.gather(-1, t[:, None]).squeeze(-1) - logps[start : start + rows]
                grad_logits = logits.sub_(normalizer[:, None]).exp_().mul_(-g[:, None])  # in place: one (C, V)
                grad_logits.scatter_add_(-1, t[:, None], g[:, None].float())
                grad_logits = grad_logits.to(ctx.logits_dtype)
                grad_hidden[start : start + rows] = grad_logits @ weight
                grad_weight += (grad_logits.T @ h).float()
                if grad_bias is not None:
                    grad_bias += grad_logits.float().sum(0)
        grad_bias = grad_bias.to(bias.dtype) if grad_bias is not None else None
        return grad_hidden, grad_weight.to(weight.dtype), grad_bias, None, None
