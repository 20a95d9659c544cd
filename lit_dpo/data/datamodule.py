"""The preference LightningDataModule: read and validate rows, tokenize them once, batch them per step."""

from __future__ import annotations

import os
import random
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

from lit_dpo.data.collate import PaddedCollator, SharedPrefixCollator
from lit_dpo.data.rows import Row, fail, read_rows
from lit_dpo.data.tokenize import Example, Truncation, UnpairedExample, fit_length, tokenize_row
from lit_dpo.errors import DataError
from lit_dpo.hf import BUNDLED, load_tokenizer

DEMO = "demo"


def demo_path(split: str) -> str:
    """Path of the demo data set shipped in the package (``train`` or ``val``)."""
    return str(Path(__file__).parent / "demo" / f"{split}.jsonl")


class PreferenceDataModule(L.LightningDataModule):
    """Preference pairs for DPO.

    Args:
        path: Training rows: a .jsonl/.json/.parquet/.csv file, a dataset folder, a Hub dataset name,
            or ``demo`` for the demo set shipped with lit_dpo (short correct answers over SmolLM2's own).
        val_path: Validation rows, in any form ``path`` takes. Without it, ``val_split`` of ``path`` is held out.
        val_split: Fraction of ``path`` held out for validation when ``val_path`` is not given (0: none).
        split: Split read from ``path`` when it is a dataset folder or Hub name.
        val_split_name: Split read from ``val_path`` when it is a dataset folder or Hub name.
        batch_size: Pairs per device per step (each pair is two sequences).
        val_batch_size: Pairs per device per validation step; defaults to ``2 * batch_size``.
        max_length: Longest prompt + completion in tokens.
        max_prompt_length: Longest prompt in tokens (None: only ``max_length`` applies).
        truncation: For pairs over a limit: ``error`` (stop, naming the row), ``keep_start`` (keep the
            prompt's end and the completions' start, as TRL does), or ``drop``; both count in a warning.
        shuffle: Shuffle training pairs each epoch.
        prefix_sharing: Pack each pair as one row ``[prompt, chosen, rejected]`` with a block attention mask,
            so the prompt is computed once and nothing is padded to its partner's length. Off: TRL's layout of
            2B padded rows. Needs an attention that takes a 4D mask (sdpa, eager), as transformers' models do.
        pack_length: With prefix sharing, pack pairs into rows of about this many tokens (balanced, block-
            diagonal mask), so no compute is spent on padding; 0 keeps one pair per row. Attention is dense
            over a row, so long rows cost quadratically: ~512 suits short pairs, 0 suits long ones.
        num_workers: DataLoader worker processes (tokenization happens once, up front).
        tokenizer_name_or_path: Tokenizer, linked by the CLI to ``--model.model_name_or_path``.
    """

    def __init__(
        self,
        path: str = DEMO,
        val_path: Optional[str] = None,
        val_split: float = 0.05,
        split: str = "train",
        val_split_name: str = "test",
        batch_size: int = 4,
        val_batch_size: Optional[int] = None,
        max_length: Optional[int] = 1024,
        max_prompt_length: Optional[int] = None,
        truncation: Truncation = "error",
        shuffle: bool = True,
        prefix_sharing: bool = True,
        pack_length: int = 512,
        num_workers: int = 0,
        tokenizer_name_or_path: str = BUNDLED,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer: Any = None
        self.train_examples: list[Example] = []
        self.val_examples: list[Example] = []

    def setup(self, stage: str) -> None:
        if self.tokenizer is not None:
            return
        hp = self.hparams
        self.tokenizer = load_tokenizer(hp.tokenizer_name_or_path)
        train_path = demo_path("train") if hp.path == DEMO else hp.path
        val_path = demo_path("val") if hp.path == DEMO and hp.val_path is None else hp.val_path
        train_rows = read_rows(train_path, hp.split)
        val_rows = read_rows(val_path, hp.val_split_name) if val_path else []
        if not val_path and hp.val_split > 0:
            train_rows, val_rows = _hold_out(train_rows, hp.val_split)
        self.train_examples = self._tokenize(train_rows)
        self.val_examples = self._tokenize(val_rows, first_index=len(self.train_examples))

    @property
    def unpaired(self) -> bool:
        """Whether the rows are unpaired prompt/completion/label rows (for KTO) rather than preference pairs."""
        examples = self.train_examples or self.val_examples
        return bool(examples) and isinstance(examples[0], UnpairedExample)

    def _tokenize(self, rows: Sequence[Row], first_index: int = 0) -> list[Example]:
        hp = self.hparams
        examples: list[Example] = []
        cut = {"truncated": 0, "dropped": 0}
        for row in rows:
            example, problem = fit_length(
                tokenize_row(self.tokenizer, row), hp.max_length, hp.max_prompt_length, hp.truncation
            )
            if problem is not None:
                field, what = problem
                if hp.truncation == "error":
                    raise fail(
                        row.source, row.row, field, f"{what} (raise --data.max_length or pass --data.truncation=keep_start or drop)"
                    )  # fmt: skip
                cut["dropped" if example is None else "truncated"] += 1
            if example is not None:
                examples.append(replace(example, index=first_index + len(examples)))
        if any(cut.values()):
            rank_zero_warn(
                f"{rows[0].source}: {cut['truncated']} of {len(rows)} pairs truncated and {cut['dropped']} dropped "
                f"to fit max_length={hp.max_length}, max_prompt_length={hp.max_prompt_length}"
            )
        if rows and not examples:
            raise DataError(f"{rows[0].source}: every row was dropped by the length limits")
        return examples

    def collator(self) -> PaddedCollator | SharedPrefixCollator:
        hp = self.hparams
        if self.unpaired and hp.batch_size < 2:
            raise DataError("unpaired (KTO) rows need --data.batch_size >= 2: the KL term pairs each prompt with "
                            "another row's completion from the same batch")  # fmt: skip
        if hp.prefix_sharing:
            return SharedPrefixCollator(
                self.tokenizer.pad_token_id, max_length=hp.max_length, pack_length=hp.pack_length
            )
        return PaddedCollator(self.tokenizer.pad_token_id, max_length=hp.max_length)

    @property
    def val_batch_size(self) -> int:
        return self.hparams.val_batch_size or 2 * self.hparams.batch_size

    def train_dataloader(self) -> DataLoader:
        # stateful: a checkpoint records the position in the epoch, so a resumed run sees the batches the
        # interrupted one would have seen next; across ranks that takes a stateful distributed sampler too
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
            kwargs = self.trainer.strategy.distributed_sampler_kwargs
            sampler = StatefulDistributedSampler(self.train_examples, shuffle=self.hparams.shuffle, seed=seed, **kwargs)
        return StatefulDataLoader(
            self.train_examples,
            batch_size=self.hparams.batch_size,
            shuffle=self.hparams.shuffle if sampler is None else None,
            sampler=sampler,
            collate_fn=self.collator(),
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        return DataLoader(
            pad_for_ranks(self.val_examples, world_size),
            batch_size=self.val_batch_size,
            collate_fn=self.collator(),
            num_workers=self.hparams.num_workers,
        )


def _hold_out(rows: Sequence[Row], fraction: float) -> tuple[list[Row], list[Row]]:
    """Split off a fixed, seeded random ``fraction`` of rows (the same on every rank and every run)."""
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    n_val = max(1, round(len(rows) * fraction))
    if n_val >= len(rows):
        raise DataError(f"{rows[0].source}: {len(rows)} rows are too few to hold out val_split={fraction}")
    val = set(order[:n_val])
    return [r for i, r in enumerate(rows) if i not in val], [r for i, r in enumerate(rows) if i in val]


def pad_for_ranks(examples: list[Example], world_size: int) -> list[Example]:
    """Pad to a multiple of ``world_size`` with weight-0 copies, so every rank runs as many batches (collectives
    in the forward, as under FSDP, must match) and the sampler repeats nothing: metrics count each pair once."""
    missing = -len(examples) % world_size
    copies = [replace(examples[i % len(examples)], weight=0.0) for i in range(missing)] if examples else []
    return examples + copies
