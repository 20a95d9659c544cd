"""The error types meant for users: their message is a single line, printed without a traceback."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor


class InputError(ValueError):
    """Bad input (data, path or option). The CLI prints the message and exits with status 2."""


class DataError(InputError):
    """Bad input data: the message names the file, the row and the field."""

    @classmethod
    def at(cls, source: str, row: Optional[int], field: Optional[str], problem: str) -> "DataError":
        """The one-line error for a problem at ``source``, ``row``, ``field`` (row and field optional)."""
        where = source + (f", row {row}" if row is not None else "") + (f", field '{field}'" if field else "")
        return cls(f"{where}: {problem}")


class SaveFailed(RuntimeError):
    """A checkpoint could not be written (a full disk, a file size limit): every rank stops, the previous
    checkpoint is kept. The CLI prints the message and exits with status 1."""


# what writers raise when a write fails: OSError from Python, RuntimeError from torch.save's C++ writer,
# SafetensorError (an Exception) from safetensors' Rust writer
WRITE_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError)
try:
    from safetensors import SafetensorError

    WRITE_ERRORS += (SafetensorError,)
except ImportError:  # pragma: no cover - safetensors is a dependency
    pass


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite; raised before the weights are updated with it."""


def raise_if_not_finite(terms: dict[str, Tensor], step: int, agree: Optional[Callable[..., bool]] = None) -> None:
    """Raise ``TrainingDiverged`` naming the step and the non-finite terms, before they reach the weights.

    ``agree(ok, all=True)`` (a strategy's ``reduce_boolean_decision``) makes every rank raise together.
    """
    finite = all(bool(torch.isfinite(t).all()) for t in terms.values())
    if agree is not None:
        finite = agree(finite, all=True)
    if finite:
        return
    bad = [f"{name} = {t[~torch.isfinite(t)][0].item()}" for name, t in terms.items() if not torch.isfinite(t).all()]
    where = ", ".join(bad) or "a term on another rank"
    raise TrainingDiverged(
        f"step {step}: {where} is not finite; no update was made with it "
        "(lower --model.learning_rate, or set --trainer.gradient_clip_val)"
    )


def nonfinite(tensor: Tensor) -> Tensor:
    """True (a 0-dim device tensor, no sync) when ``tensor`` holds a NaN or an infinity: one reduction, since such an
    element makes the fp32 sum non-finite (``isfinite().all()`` makes four passes; fp16 sums would overflow)."""
    return ~torch.isfinite(tensor.sum(dtype=torch.float32))


def nonfinite_gradients(model: torch.nn.Module) -> list[str]:
    """The parameters of ``model`` whose gradient holds a NaN or an infinity (one sync for all of them)."""
    grads = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if not grads:
        return []
    local = [g.to_local() if hasattr(g, "to_local") else g for _, g in grads]  # FSDP: this rank's shard
    bad = torch.stack([nonfinite(g) for g in local]).tolist()
    return [name for (name, _), flag in zip(grads, bad) if flag]


def raise_if_gradients_not_finite(names: list[str], step: int, agree: Optional[Callable[..., bool]] = None) -> None:
    """Raise ``TrainingDiverged`` naming the step and the first parameter whose gradient is not finite, on every
    rank together (``agree``), before the gradients reach the weights."""
    finite = not names
    if agree is not None:
        finite = agree(finite, all=True)
    if finite:
        return
    where = (
        f"the gradient of {names[0]}" + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")
        if names
        else "a gradient on another rank"
    )
    raise TrainingDiverged(
        f"step {step}: {where} is not finite; no update was made with it "
        "(lower --model.learning_rate, or set --trainer.gradient_clip_val)"
    )


def describe(err: BaseException) -> str:
    """``Type: first line of the message``: an exception as one line."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
