"""Lightning callbacks that show what DPO did: ``WinRate`` (generations judged against the reference),
``TrainingHealth`` (alarms), ``Throughput`` (``perf/`` metrics), ``DPOProgressBar`` (what a DPO user watches)."""

from lit_dpo.callbacks.generations import WinRate
from lit_dpo.callbacks.health import TrainingHealth, check_start
from lit_dpo.callbacks.progress import DPOProgressBar
from lit_dpo.callbacks.throughput import Throughput

__all__ = ["DPOProgressBar", "Throughput", "TrainingHealth", "WinRate", "check_start"]
