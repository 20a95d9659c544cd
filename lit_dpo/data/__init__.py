"""Preference data: rows (read + validate) -> token ids (tokenize) -> one ``Batch`` per step (collate).

``lit_dpo.data.PreferenceDataModule`` is the ``--data`` of the command line; ``--data=lit_dpo.data.OnlineDataModule``
samples its pairs from the policy each round (online DPO).
"""

from lit_dpo.data.collate import Batch, PaddedCollator, SharedPrefixCollator
from lit_dpo.data.datamodule import DEMO, PreferenceDataModule, demo_path, pad_for_ranks
from lit_dpo.data.online import OnlineDataModule
from lit_dpo.data.prompts import Prompt, read_prompts
from lit_dpo.data.rows import PairRow, UnpairedRow, parse_row, read_rows
from lit_dpo.data.tokenize import Pair, UnpairedExample, fit_length, tokenize_row

__all__ = [
    "DEMO",
    "Batch",
    "PaddedCollator",
    "Pair",
    "OnlineDataModule",
    "PairRow",
    "PreferenceDataModule",
    "Prompt",
    "SharedPrefixCollator",
    "UnpairedExample",
    "UnpairedRow",
    "demo_path",
    "fit_length",
    "pad_for_ranks",
    "read_prompts",
    "read_rows",
    "tokenize_row",
    "parse_row",
]
