"""General ability before and after DPO, measured with EleutherAI's lm-evaluation-harness (``pip install
'lit_dpo[eval]'``): ``evaluate`` runs tasks on a model in memory, ``logged`` names the scores as lit_dpo logs them
(``eval/{reference,policy,delta}/<task>/<metric>``) and ``table`` shows them side by side.

Tasks are lm-evaluation-harness's names (from the Hub, where there is network) or ``lit_dpo_arithmetic``, the
offline task shipped with lit_dpo (``lit_dpo.harness.offline``).
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Any, Iterator, Optional

import numpy as np
import torch

from lit_dpo.errors import InputError

Scores = dict[str, dict[str, float]]  # task -> metric -> value
INSTALL = "lm-evaluation-harness is not installed: pip install 'lit_dpo[eval]'"
SIDES = ("reference", "policy", "delta")


def task_manager(tasks: Optional[list[str]] = None) -> Any:
    """lm-evaluation-harness's task index, lit_dpo's offline task included; indexing lm-evaluation-harness's own
    thousands of tasks (seconds) only when ``tasks`` names another (None: any)."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise InputError(INSTALL) from None
    from lit_dpo.harness import offline  # here: ``python -m lit_dpo.harness.offline`` runs that module as a script
    from lit_dpo.hf import cache_dir, private_dir

    folder = private_dir(cache_dir() / "harness_tasks")  # one folder, rewritten: no temporary folder left per run
    offline.write_config(folder)
    with _quiet():
        defaults = tasks is None or any(t != offline.NAME for t in tasks)
        return TaskManager(include_path=str(folder), include_defaults=defaults, verbosity="ERROR")


def check_tasks(tasks: list[str], manager: Any, option: str = "--eval_harness.tasks") -> None:
    """One line for a task name lm-evaluation-harness does not know, before anything runs."""
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        from lit_dpo.harness import offline

        hint = f"; lit_dpo's offline task is {offline.NAME}" if offline.NAME not in tasks else ""
        raise InputError(f"{option}: unknown task {', '.join(map(repr, unknown))} (lm-evaluation-harness{hint})")


def evaluate(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: list[str],
    manager: Any = None,
    limit: Optional[int] = None,
    batch_size: int = 8,
    num_fewshot: Optional[int] = None,
) -> Optional[Scores]:
    """``tasks``' scores of ``model`` (a transformers model, a PEFT model or a sharded one: every rank of a sharded
    model must call this), leaving its train/eval mode and the global random state as they were. In a process
    group, lm-evaluation-harness reports on rank 0 only: None on the other ranks."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    manager = manager if manager is not None else task_manager()
    was_training = model.training
    model.eval()
    try:
        with _kept_random_state(), _quiet(), torch.no_grad():
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            results = simple_evaluate(
                model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, task_manager=manager,
                bootstrap_iters=0, random_seed=None, numpy_random_seed=None, torch_random_seed=None,
                log_samples=False, verbosity="ERROR",
            )  # fmt: skip
    finally:
        model.train(was_training)
    return _scores(results["results"]) if results is not None else None


def _scores(results: dict[str, dict[str, Any]]) -> Scores:
    """``{"acc,none": 0.5, "acc_stderr,none": ..., "alias": ...}`` per task -> ``{"acc": 0.5}``."""
    scores: Scores = {}
    for task, values in results.items():
        for key, value in values.items():
            metric, _, kind = key.partition(",")
            if kind and "stderr" not in metric and isinstance(value, (int, float)):
                scores.setdefault(task, {})[metric if kind == "none" else f"{metric}_{kind}"] = float(value)
    return scores


def logged(reference: Optional[Scores], policy: Optional[Scores]) -> dict[str, float]:
    """The scores as lit_dpo logs them: ``eval/reference/<task>/<metric>``, ``eval/policy/...`` and, where both
    are known, ``eval/delta/...`` (policy minus reference)."""
    out: dict[str, float] = {}
    for side, scores in (("reference", reference), ("policy", policy)):
        for task, metrics in (scores or {}).items():
            out.update({f"eval/{side}/{task}/{metric}": value for metric, value in metrics.items()})
    for task, metrics in (policy or {}).items():
        for metric, value in metrics.items():
            before = (reference or {}).get(task, {}).get(metric)
            if before is not None:
                out[f"eval/delta/{task}/{metric}"] = value - before
    return out


def rows(metrics: dict[str, float]) -> list[tuple[str, str, str, str, str]]:
    """``(task, metric, reference, policy, delta)`` rows of the ``eval/`` metrics in ``metrics`` ("-": unknown)."""
    found: dict[tuple[str, str], dict[str, float]] = {}
    for name, value in metrics.items():
        parts = name.split("/")
        if len(parts) == 4 and parts[0] == "eval" and parts[1] in SIDES:
            found.setdefault((parts[2], parts[3]), {})[parts[1]] = float(value)
    shown = {"reference": "{:.4f}", "policy": "{:.4f}", "delta": "{:+.4f}"}
    return [
        (task, metric, *(shown[s].format(sides[s]) if s in sides else "-" for s in SIDES))
        for (task, metric), sides in sorted(found.items())
    ]


def table(metrics: dict[str, float]) -> str:
    """The general-ability table (Markdown) of the ``eval/`` metrics in ``metrics``; empty when there are none."""
    found = rows(metrics)
    if not found:
        return ""
    lines = ["| task | metric | reference | policy | delta |", "|---|---|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in found])


@contextlib.contextmanager
def _kept_random_state() -> Iterator[None]:
    """lm-evaluation-harness draws from the global generators: a fit's own draws must not depend on it."""
    state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(state)
    np.random.set_state(np_state)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """lm-evaluation-harness logs each step at INFO/WARNING (e.g. that a model object was passed): its errors only."""
    loggers = [logging.getLogger(name) for name in ("lm_eval", "lm-eval", "evaluate", "datasets")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
