"""Scoring: one forward of a model over a batch -> per-sequence log-probs (``forward``), the LM head on the
scored positions only, in chunks when large (``lm_head``), and the per-pair tensors losses read (``pairs``)."""

from lit_dpo.scoring.forward import SequenceScores, score_sequences
from lit_dpo.scoring.logps import Logps, PairLogps, UnpairedLogps, split_scores

__all__ = ["Logps", "PairLogps", "SequenceScores", "UnpairedLogps", "score_sequences", "split_scores"]
