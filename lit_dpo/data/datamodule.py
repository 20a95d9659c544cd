"""The preference LightningDataModule: read, validate and tokenize rows from one or more sources once (into
memory-mapped stores, cached across runs: ``lit_dpo.data.store``), batch them per step."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from itertools import islice
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

from lit_dpo.data.checks import check_options, check_streaming
from lit_dpo.data.collate import PaddedCollator, SharedPrefixCollator
from lit_dpo.data.examples import Examples, Part, pad_for_ranks
from lit_dpo.data.images import images_column
from lit_dpo.data.prepare import SourceLog, held_out_positions, kept_positions
from lit_dpo.data.prompts import Prompt
from lit_dpo.data.protocol import TokenizerSource
from lit_dpo.data.sources import Source, Sources, as_sources, sampled_positions
from lit_dpo.data.store import ExampleStore, Limits, open_store
from lit_dpo.data.stream import PairStream, StreamLoader
from lit_dpo.data.tokenize import Example, Pair, Truncation, UnpairedExample
from lit_dpo.errors import DataError
from lit_dpo.hf import BUNDLED, cache_dir, load_text_tools, private_dir
from lit_dpo.resume import DATA_SETTINGS

DEMO = "demo"


def demo_path(split: str) -> str:
    """Path of the demo data set shipped in the package (``train`` or ``val``)."""
    return str(Path(__file__).parent / "demo" / f"{split}.jsonl")


GPU_PAD_MULTIPLE = 64  # row widths on GPUs (see ``collator``)


class PreferenceDataModule(L.LightningDataModule):
    """Preference pairs for DPO, read from files, folders or the Hub and tokenized once (``--data.help``: all).

    Args:
        path: Training rows: a .jsonl/.json/.parquet/.csv file, a dataset folder, a Hub dataset name, or
            ``demo`` for the demo set shipped with lit_dpo (short correct answers over SmolLM2's own); or a list
            of sources mixed together, each a path or ``{path, name, split, config_name, columns, weight, rows}``
            (``lit_dpo.data.sources.Source``).
        val_path: Validation rows, in any form ``path`` takes. Without it, ``val_split`` of ``path`` is held out.
            With several validation sources, ``val/`` metrics are also logged per source (``val/<name>/...``).
        val_split: Fraction of each source of ``path`` held out for validation when ``val_path`` is not given (0: none).
        split: Split read from ``path`` when it is a dataset folder or Hub name.
        val_split_name: Split read from ``val_path`` when it is a dataset folder or Hub name.
        config_name: Configuration of a Hub data set (``datasets.load_dataset(path, config_name)``).
        columns: Column holding each field, for data sets named otherwise: ``{prompt: question, chosen: response_j,
            rejected: response_k}`` (fields: prompt, chosen, rejected, completion, label, tools).
        roles: Message roles to rename, e.g. ShareGPT's ``{human: user, gpt: assistant}``; other roles outside
            system, developer, user, assistant, tool, function, ipython are refused.
        batch_size: Pairs per device per step (each pair is two sequences).
        val_batch_size: Pairs per device per validation step; defaults to ``2 * batch_size``.
        max_length: Longest prompt + completion in tokens.
        max_prompt_length: Longest prompt in tokens (None: only ``max_length`` applies).
        truncation: For pairs over a limit: ``keep_start`` (keep the prompt's end and the completions' start, as
            TRL does; pairs whose completions then become identical are dropped), ``drop``, or ``error`` (stop,
            naming the row); what was truncated or dropped is counted in one warning per source.
        shuffle: Shuffle training pairs each epoch.
        prefix_sharing: Pack each pair as one row ``[prompt, chosen, rejected]`` with a block attention mask,
            so the prompt is computed once and nothing is padded to its partner's length. Off: TRL's layout of
            2B padded rows. Needs an attention that takes a 4D mask (sdpa, eager), as transformers' models do.
        pack_length: With prefix sharing, pack pairs into rows of at most this many tokens (a longer pair: a
            row of its own) under a block-diagonal mask, as many rows as compute the fewest tokens, padding
            included; 0 keeps one pair per row. The tokens all prompts of a row start with (a chat template's
            system prompt) are computed once for the row. On a CPU each pair's attention runs on its own; on a GPU
            sdpa and eager attend over the whole row (quadratic in its length), flex_attention skips the empty
            blocks.
        num_workers: DataLoader worker processes (tokenization happens once, up front).
        num_proc: Processes that tokenize a source the first time it is read (one process per node does it; the
            others, later runs and resumes read the cached result); default: the CPUs available, at most 8.
        cache_dir: Where tokenized sources are cached (memory-mapped Arrow files, keyed by the source's files,
            the tokenizer and the options); default: ``$LIT_DPO_CACHE/data`` (``~/.cache/lit_dpo/data``). On a
            cluster, a folder every node can read lets one node's work serve the others.
        streaming: Read, validate and tokenize the training rows as training goes instead of once up front (for
            data larger than the disk should hold as a cached store): in windows of ``stream_window`` rows, shuffled
            within each window; resumes exactly. Needs the trainer's ``max_steps`` and ``val_path`` (or ``val_split=0``);
            a source's ``weight`` is its share of each window (``lit_dpo.data.stream``).
        stream_window: With ``streaming``, rows read, tokenized and shuffled together.
        tokenizer_name_or_path: Tokenizer; None: the model's (``DPOModule.model_name_or_path``; the CLI links
            it to ``--model.model_name_or_path``), or the bundled model's outside a trainer.
        trust_remote_code: Allow tokenizer code from the Hub; with the model's tokenizer, the model's setting.
    """

    def __init__(
        self,
        path: Sources = DEMO,
        val_path: Optional[Sources] = None,
        val_split: float = 0.05,
        split: str = "train",
        val_split_name: str = "test",
        config_name: Optional[str] = None,
        columns: Optional[dict[str, str]] = None,
        roles: Optional[dict[str, str]] = None,
        batch_size: int = 4,
        val_batch_size: Optional[int] = None,
        max_length: Optional[int] = 1024,
        max_prompt_length: Optional[int] = None,
        truncation: Truncation = "keep_start",
        shuffle: bool = True,
        prefix_sharing: bool = True,
        pack_length: int = 512,
        num_workers: int = 0,
        num_proc: Optional[int] = None,
        cache_dir: Optional[str] = None,
        streaming: bool = False,
        stream_window: int = 10_000,
        tokenizer_name_or_path: Optional[str] = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_options(batch_size, val_batch_size, max_length, max_prompt_length, val_split, pack_length, num_proc,
                      stream_window)  # fmt: skip
        self.tokenizer: Any = None
        self.processor: Any = None  # a vision-language model's (tokenizer, image processor, chat template)
        self.train_examples: Sequence[Example] = []
        self.val_examples: Sequence[Example] = []
        self.source_names: list[str] = []  # Example.source indexes it
        self._logs: list[SourceLog] = []  # what became of every source's rows
        self._scratch: Optional[Path] = None  # where sources are tokenized when the cache cannot be written
        self.judge: Any = None  # the data's own judge: only online DPO has one
        self.stream: Optional[PairStream] = None  # the training examples, with ``streaming``

    online = False  # pairs are known before training (``OnlineDataModule`` samples them each round)

    def prepare_data(self) -> None:
        """Tokenize every source not cached yet (Lightning calls this on one process per node, before ``setup``)."""
        tokenizer, processor = load_text_tools(*self.tokenizer_source())
        train, val = self._sources()
        for source in ([] if self.hparams.streaming else train) + val:
            self._store(source, tokenizer, processor)

    def setup(self, stage: str) -> None:
        if self.tokenizer is not None:
            return
        hp = self.hparams
        self.tokenizer, self.processor = load_text_tools(*self.tokenizer_source())
        train, val = self._sources()
        if hp.streaming:
            return self._setup_stream(train, val)
        train_stores = [self._store(s, self.tokenizer, self.processor) for s in train]
        held_out = not val and hp.val_split > 0  # hold out the same fraction of every source
        if held_out:
            held = [held_out_positions(len(store), hp.val_split, s.path) for s, store in zip(train, train_stores)]
            val, val_stores = train, train_stores
            train_positions, val_positions = [t for t, _ in held], [v for _, v in held]
        else:
            val_stores = [self._store(s, self.tokenizer, self.processor) for s in val]
            train_positions = [np.arange(len(store)) for store in train_stores]
            val_positions = [np.arange(len(store)) for store in val_stores]
        self.source_names = list(dict.fromkeys(s.name for s in train + val))
        self.train_examples = self._examples(train, train_stores, train_positions, "train", read_drops=True)
        self.val_examples = self._examples(val, val_stores, val_positions, "val", read_drops=not held_out)
        for log in self._logs:
            if log.warning(self.limits) is not None:
                rank_zero_warn(log.warning(self.limits))
        if len({store.unpaired for store in train_stores + val_stores}) > 1:
            raise DataError("the sources mix row forms: preference pairs (prompt/chosen/rejected) and unpaired rows "
                            "(prompt/completion/label); use one form per run")  # fmt: skip

    def _setup_stream(self, train: list[Source], val: list[Source]) -> None:
        """``streaming``: the training examples as a ``PairStream``; validation from stores, as without it."""
        hp = self.hparams
        check_streaming(self, train, val)
        self.source_names = list(dict.fromkeys(s.name for s in train + val))
        ids = [self.source_names.index(s.name) for s in train]
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.stream = PairStream(
            train, ids, hp.roles, self.tokenizer, self.limits, hp.stream_window, hp.shuffle, seed, hp.batch_size,
            epoch=lambda: self.trainer.current_epoch if self.trainer is not None else 0, processor=self.processor,
        )  # fmt: skip
        self.stream.peek()
        stores = [self._store(s, self.tokenizer, self.processor) for s in val]
        self.val_examples = self._examples(val, stores, [np.arange(len(store)) for store in stores], "val", True)
        if self.val_examples and isinstance(self.val_examples[0], UnpairedExample) != self.stream.unpaired:
            raise DataError("the sources mix row forms: preference pairs (prompt/chosen/rejected) and unpaired rows "
                            "(prompt/completion/label); use one form per run")  # fmt: skip

    @property
    def logs(self) -> list[SourceLog]:
        """What became of every source's rows, by stage; streamed training sources: of their first window's rows."""
        return (self.stream.first_logs() if self.stream is not None else []) + self._logs

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.stream is not None and self.trainer is not None and self.trainer.training:
            self.stream.commit()  # a batch reaches the model: what a checkpoint's loader state counts
        return batch

    def _store(self, source: Source, tokenizer: Any, processor: Any = None) -> ExampleStore:
        hp = self.hparams
        if self._scratch is None:
            try:
                root = Path(hp.cache_dir) if hp.cache_dir is not None else private_dir(cache_dir() / "data")
                return open_store(source, hp.roles, tokenizer, self.limits, root, hp.num_proc, processor)
            except OSError as err:  # a cache that cannot be written must not stop the run (as the reference's)
                self._scratch = Path(tempfile.mkdtemp(prefix="lit_dpo_data_"))
                weakref.finalize(self, shutil.rmtree, self._scratch, True)  # written here, removed here
                rank_zero_warn(f"could not use the data cache ({type(err).__name__}: {err}); the sources are "
                               f"tokenized into {self._scratch} for this run only")  # fmt: skip
        return open_store(source, hp.roles, tokenizer, self.limits, self._scratch, hp.num_proc, processor)

    def tokenizer_source(self) -> tuple[str, bool]:
        """The tokenizer to load and whether it may run Hub code: the one given, else the model's."""
        hp = self.hparams
        if hp.tokenizer_name_or_path is not None:
            return hp.tokenizer_name_or_path, hp.trust_remote_code
        model = self.trainer.lightning_module if self.trainer is not None else None
        if isinstance(model, TokenizerSource):
            return model.tokenizer_name_or_path, model.trust_remote_code
        return BUNDLED, hp.trust_remote_code

    demo_files = ("train", "val")  # what ``path=demo`` reads: the demo's training and held-out files

    def _sources(self) -> tuple[list[Source], list[Source]]:
        """The training and validation sources of ``path`` and ``val_path`` (``demo``: the files shipped)."""
        hp = self.hparams
        demo = hp.path == DEMO
        train = as_sources(demo_path(self.demo_files[0]) if demo else hp.path, hp.split, hp.config_name, hp.columns)
        val_value = demo_path(self.demo_files[1]) if demo and hp.val_path is None else hp.val_path
        val = as_sources(val_value, hp.val_split_name, hp.config_name, hp.columns) if val_value else []
        if demo:
            train[0].name = (val or train)[0].name = DEMO
        return train, val

    @property
    def limits(self) -> Limits:
        return Limits(self.hparams.max_length, self.hparams.max_prompt_length, self.hparams.truncation)

    def _examples(
        self, sources: list[Source], stores: list[ExampleStore], positions: list[np.ndarray], stage: str,
        read_drops: bool,
    ) -> Examples:  # fmt: skip
        """Each source's kept rows (weighted for training) as examples, numbered after those made so far; what
        became of its rows goes into ``self._logs`` (``read_drops``: with the rows validation left out)."""
        parts = []
        for source, store, chosen in zip(sources, stores, positions):
            dropped = store.read_dropped if read_drops else {}
            log = SourceLog(source.name, source.path, stage, len(chosen) + sum(map(len, dropped.values())))
            log.dropped.update(dropped)
            kept = kept_positions(store, chosen, log)
            if len(chosen) and not len(kept):
                raise DataError(f"{source.path}: every row was dropped by the length limits")
            if stage == "train":
                kept = kept[sampled_positions(len(kept), source)]
            log.sampled = len(kept)
            self._logs.append(log)
            parts.append(Part(store, kept, self.source_names.index(source.name)))
        examples = Examples(parts, first=len(self.train_examples))
        if sources and not len(examples):
            raise DataError(f"{sources[0].path}: no rows left to {stage} on (see the warning above)")
        return examples

    def fingerprint(self) -> str:
        """SHA-256 of the training examples in order (token ids, labels, sources): what a run's sample order and
        schedule follow from. Checkpoints record it, so that a resumed run can tell its data changed."""
        if self.stream is not None:
            return self.stream.fingerprint(self.hparams.roles, self.tokenizer, self.limits)
        assert isinstance(self.train_examples, Examples), "fingerprint() needs setup() first"
        return self.train_examples.fingerprint()

    def training_settings(self) -> dict[str, Any]:
        return {name: self.hparams[name] for name in DATA_SETTINGS}

    @property
    def unpaired(self) -> bool:
        """Whether the rows are unpaired prompt/completion/label rows (for KTO) rather than preference pairs."""
        if self.stream is not None:
            return bool(self.stream.unpaired)
        examples = self.train_examples or self.val_examples
        return bool(examples) and isinstance(examples[0], UnpairedExample)

    @property
    def val_source_names(self) -> list[str]:
        """The sources of the validation examples, in order (Example.source indexes ``source_names``)."""
        return [self.source_names[i] for i in sorted({ex.source for ex in self.val_examples})]

    def held_out_prompts(self, count: int) -> list[Prompt]:
        """The first ``count`` validation prompts, for generations, with the pair's answers as the judge's columns."""
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        pairs = list(islice((ex for ex in self.val_examples if isinstance(ex, Pair) and ex.weight > 0), count))
        return [
            Prompt(ex.prompt_ids, decode(ex.prompt_ids), {"chosen": decode(ex.chosen_ids),
                   "rejected": decode(ex.rejected_ids)} | images_column(ex.images), row=ex.row, images=ex.images)
            for ex in pairs
        ]  # fmt: skip

    def collator(self) -> PaddedCollator | SharedPrefixCollator:
        hp = self.hparams
        if self.unpaired and hp.batch_size < 2:
            raise DataError("unpaired (KTO) rows need --data.batch_size >= 2: the KL term pairs each prompt with "
                            "another row's completion from the same batch")  # fmt: skip
        # on a GPU, row widths rounded up to 64 tokens: a few shapes, so that attention kernels' plans (cuDNN) and
        # compiled code (FlexAttention) are reused instead of rebuilt for each batch; padding is masked out (exact)
        multiple = (
            GPU_PAD_MULTIPLE if self.trainer is not None and self.trainer.strategy.root_device.type == "cuda" else None
        )
        images = self.processor.image_processor if self.processor is not None else None
        if hp.prefix_sharing:
            return SharedPrefixCollator(self.tokenizer.pad_token_id, multiple, hp.max_length, images, hp.pack_length)
        return PaddedCollator(self.tokenizer.pad_token_id, multiple, hp.max_length, images)

    @property
    def batch_size(self) -> int:
        return self.hparams.batch_size

    @property
    def val_batch_size(self) -> int:
        return self.hparams.val_batch_size or 2 * self.hparams.batch_size

    def train_dataloader(self) -> DataLoader:
        # stateful: a checkpoint records the position in the epoch, so a resumed run sees the batches the
        # interrupted one would have seen next. The order is drawn from (seed, epoch) alone, on one process as on
        # several, so an epoch that starts after a resume is the one the uninterrupted run would have seen
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        ranks = {"num_replicas": 1, "rank": 0}
        if self.trainer is not None and self.trainer.world_size > 1:
            ranks = self.trainer.strategy.distributed_sampler_kwargs
        if self.stream is not None:  # read as it goes: each rank takes its turn of every window
            self.stream.rank, self.stream.world_size = ranks["rank"], ranks["num_replicas"]
            return StreamLoader(self.stream, batch_size=self.hparams.batch_size, collate_fn=self.collator())
        sampler = StatefulDistributedSampler(self.train_examples, shuffle=self.hparams.shuffle, seed=seed, **ranks)
        return StatefulDataLoader(
            self.train_examples,
            batch_size=self.hparams.batch_size,
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
