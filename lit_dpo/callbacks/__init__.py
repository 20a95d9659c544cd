"""Lightning callbacks that show what DPO did: ``WinRate`` (generations judged against the reference),
``TrainingHealth`` (alarms), ``Throughput`` (``perf/`` metrics), ``DPOProgressBar`` (what a DPO user watches),
``FinishRun`` (the end of a fit: last validation, export, report), ``RunLock`` (one fit per run directory),
``SameJob`` (resume only into the same job), ``EvalHarness`` (general ability before and after DPO)."""

from lit_dpo.callbacks.finish import FinishRun
from lit_dpo.callbacks.generations import WinRate
from lit_dpo.callbacks.harness import EvalHarness
from lit_dpo.callbacks.health import TrainingHealth
from lit_dpo.callbacks.lock import RunLock
from lit_dpo.callbacks.progress import DPOProgressBar
from lit_dpo.callbacks.same_job import SameJob
from lit_dpo.callbacks.throughput import Throughput

__all__ = [
    "DPOProgressBar",
    "EvalHarness",
    "FinishRun",
    "RunLock",
    "SameJob",
    "Throughput",
    "TrainingHealth",
    "WinRate",
]
