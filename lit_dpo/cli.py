"""LightningCLI for lit_dpo: the options are the typed constructor arguments of the module and data module."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, Optional

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lit_dpo.data import PreferenceDataModule
from lit_dpo.errors import InputError
from lit_dpo.module import DPOModule

TRAINER_DEFAULTS = {
    "default_root_dir": "runs",
    "max_epochs": 1,
    "log_every_n_steps": 1,
    "num_sanity_val_steps": 0,  # every fit ends with a full validation; a partial one first only costs time
    "callbacks": [{"class_path": "lightning.pytorch.callbacks.RichProgressBar"}],
}


class DPOCLI(LightningCLI):
    """``python -m lit_dpo.fit`` / ``python -m lit_dpo.validate``: no subcommand; adds ``--ckpt_path``, ``--export_dir``."""

    def __init__(self, args: Optional[list[str]] = None) -> None:
        super().__init__(
            DPOModule,
            PreferenceDataModule,
            run=False,
            args=args,
            seed_everything_default=42,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_kwargs={"overwrite": True},  # a resumed run rewrites its config (Lightning #17115)
            auto_configure_optimizers=False,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.model_name_or_path", "data.tokenizer_name_or_path")
        parser.add_argument(
            "--ckpt_path",
            type=Optional[str],
            default=None,
            help="Checkpoint to resume or validate ('last' for the newest).",
        )
        parser.add_argument(
            "--export_dir",
            type=Optional[str],
            default=None,
            help="Where fit writes the trained policy in HF format (default: <run dir>/hf_model).",
        )

    def before_instantiate_classes(self) -> None:
        # CSV is the default logger, under --trainer.default_root_dir (Lightning's own default would be
        # TensorBoard whenever it happens to be installed)
        if self.config.trainer.logger in (None, True):
            self.config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger",
                init_args=Namespace(save_dir=self.config.trainer.default_root_dir, name="lightning_logs"),
            )


def run_dir(cli: DPOCLI) -> Path:
    """The run's directory: the logger's version folder, holding metrics, config and checkpoints."""
    logger = cli.trainer.logger
    return Path(logger.log_dir if logger is not None and logger.log_dir else cli.trainer.default_root_dir)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show bad input as one line on stderr and exit with status 2, never as a traceback."""
    try:
        yield
    except InputError as err:
        print(f"lit_dpo: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
