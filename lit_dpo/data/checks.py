"""The data module's option checks: values that cannot work, and what streaming cannot do, refused in one line
each before anything is read."""

from __future__ import annotations

from typing import Any, Optional

from lit_dpo.data.sources import Source
from lit_dpo.errors import InputError


def check_options(
    batch_size: int, val_batch_size: Optional[int], max_length: Optional[int], max_prompt_length: Optional[int],
    val_split: float, pack_length: int, num_proc: Optional[int], stream_window: int,
) -> None:  # fmt: skip
    """Refuse option values that cannot work, before anything loads."""
    problems = {
        f"--data.batch_size must be >= 1, got {batch_size}": batch_size < 1,
        f"--data.val_batch_size must be >= 1, got {val_batch_size}": val_batch_size is not None and val_batch_size < 1,
        f"--data.max_length must be >= 1, got {max_length}": max_length is not None and max_length < 1,
        f"--data.max_prompt_length must be >= 0, got {max_prompt_length}": (max_prompt_length or 0) < 0,
        f"--data.val_split must be in [0, 1), got {val_split}": not 0 <= val_split < 1,
        f"--data.pack_length must be >= 0, got {pack_length}": pack_length < 0,
        f"--data.num_proc must be >= 1, got {num_proc}": num_proc is not None and num_proc < 1,
        f"--data.stream_window must be >= 1, got {stream_window}": stream_window < 1,
    }
    for problem, wrong in problems.items():
        if wrong:
            raise InputError(problem)


def check_streaming(data: Any, train: list[Source], val: list[Source]) -> None:
    """Refuse what streaming cannot do, in one line each, before anything is read."""
    hp, trainer = data.hparams, data.trainer
    problems = {
        "--data.streaming=true reads the training rows as training goes, so it cannot hold a fraction of them out: "
        "pass --data.val_path (read once, cached) or --data.val_split=0": not val and hp.val_split > 0,
        "--data.streaming=true reads rows in the training process: leave --data.num_workers at 0": hp.num_workers > 0,
        "--data.streaming=true does not know a source's rows ahead: give a source weight (its share of each window), "
        "not rows": any(s.rows is not None for s in train),
        "--data.streaming=true needs --trainer.max_steps: the number of training rows is not known before training": (
            trainer is not None and trainer.state.fn == "fit" and trainer.max_steps <= 0
        ),
    }
    for problem, wrong in problems.items():
        if wrong:
            raise InputError(problem)
