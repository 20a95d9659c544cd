"""Preference losses: pure functions of per-pair log-probs, each registered with a ``LossSpec`` saying what it
needs (``registry.LOSSES``); ``build_objective`` turns ``--model.loss_type`` and its options into an
``Objective``. Families: ``dpo`` (functions of the DPO logit), ``absolute`` (of each completion's log-ratio),
``reference_free`` (SimPO, ORPO, the SFT term), ``unpaired`` (KTO); shared pieces in ``common``."""

from lit_dpo.losses.common import Between, LossOutput, LossSpec
from lit_dpo.losses.registry import LOSSES, OPTIONS, Objective, build_objective

__all__ = ["LOSSES", "OPTIONS", "Between", "LossOutput", "LossSpec", "Objective", "build_objective"]
