"""What the rest of lit_dpo reads from a data module: ``PreferenceData``. ``PreferenceDataModule`` and
``OnlineDataModule`` provide it; a data module of your own that provides it works with ``DPOModule``, the cached
reference and the callbacks."""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable

from lit_dpo.data.collate import Batch
from lit_dpo.data.prepare import SourceLog
from lit_dpo.data.prompts import Prompt
from lit_dpo.data.tokenize import Example


@runtime_checkable
class PreferenceData(Protocol):
    tokenizer: Any  # a transformers tokenizer, loaded in ``setup``
    train_examples: Sequence[Example]  # tokenized training examples; ``Example.index`` numbers train then val
    val_examples: Sequence[Example]
    source_names: list[str]  # ``Example.source`` indexes it
    logs: list[SourceLog]  # what became of every source's rows, per stage (the data report, the model card)
    online: bool  # pairs are sampled during training (online DPO): unknown before it starts
    judge: Optional[Callable[..., Any]]  # the data's own judge (online DPO), which ``WinRate`` defaults to

    @property
    def unpaired(self) -> bool:
        """Whether the rows are unpaired prompt/completion/label rows (KTO) rather than preference pairs."""

    @property
    def batch_size(self) -> int:
        """Pairs per device per training step."""

    @property
    def val_batch_size(self) -> int: ...

    @property
    def val_source_names(self) -> list[str]:
        """The names of the validation examples' sources, in order."""

    def collator(self) -> Callable[[list[Example]], Batch]:
        """Turns a list of examples into one ``Batch``."""

    def fingerprint(self) -> str:
        """A hash of what the training order and schedule follow from; a resumed run checks it."""

    def training_settings(self) -> dict[str, Any]:
        """The options that shape training (batch size, length limits, ...), by their ``--data.*`` names; a
        resumed run must have the same (``lit_dpo.resume``)."""

    def held_out_prompts(self, count: int) -> list[Prompt]:
        """Up to ``count`` held-out prompts to generate from (``WinRate``)."""


@runtime_checkable
class VisionData(Protocol):
    """A data module whose prompts may hold images: the vision-language model's processor (None for text), which
    generation (``WinRate``) turns a prompt's images into the model's inputs with."""

    processor: Any


@runtime_checkable
class TokenizerSource(Protocol):
    """A model that names the tokenizer its data should use (``DPOModule``): a data module built without a
    tokenizer takes the model's."""

    @property
    def tokenizer_name_or_path(self) -> str: ...

    @property
    def trust_remote_code(self) -> bool: ...


def preference_data(trainer: Any) -> Optional[PreferenceData]:
    """The trainer's data module if it provides ``PreferenceData``, else None (data given as plain loaders)."""
    datamodule = trainer.datamodule if trainer is not None else None
    return datamodule if isinstance(datamodule, PreferenceData) else None
