"""LightningCLI for lit_dpo: the options are the typed constructor arguments of the module and data module."""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

import lightning as L
import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lit_dpo.data import PreferenceDataModule
from lit_dpo.errors import InputError, TrainingDiverged
from lit_dpo.module import DPOModule

# the frozen reference is in eval mode on purpose; Lightning would warn about it at every fit
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
# val/ and train/ values come from torchmetrics, already reduced over ranks; Lightning cannot know that
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|train)/")

TRAINER_DEFAULTS = {
    "default_root_dir": "runs",
    "max_epochs": 1,
    "precision": "32-true",
    "log_every_n_steps": 1,
    "num_sanity_val_steps": 0,  # every fit ends with a full validation; a partial one first only costs time
}


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Write ``config.yaml`` to the run directory and send the resolved config to the logger (e.g. W&B)."""

    def save_config(self, trainer: Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


class DPOCLI(LightningCLI):
    """The CLI of ``python -m lit_dpo.fit`` and ``python -m lit_dpo.validate``: no subcommand, plus ``--ckpt_path``."""

    def __init__(self, args: Optional[list[str]] = None) -> None:
        super().__init__(
            DPOModule,
            PreferenceDataModule,
            run=False,
            args=args,
            seed_everything_default=42,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_callback=LoggerSaveConfigCallback,
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

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        # the Rich progress bar by default, unless turned off or replaced by the user's own
        user_callbacks = config.get("callbacks") or []
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in user_callbacks
        ):
            callbacks = [*callbacks, RichProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        trainer = self.config.trainer
        # CSV is the default logger, under --trainer.default_root_dir (Lightning's own default would be
        # TensorBoard whenever it happens to be installed)
        if trainer.logger in (None, True):
            logs = Path(trainer.default_root_dir) / "lightning_logs"
            # resuming `last`: continue in the newest run directory, where it lives, keeping its metrics
            version = _latest_version(logs) if self.config.get("ckpt_path") == "last" else None
            resume_step = None if version is None else _checkpoint_step(logs / f"version_{version}" / "checkpoints")
            trainer.logger = Namespace(
                class_path="lit_dpo.loggers.ResumableCSVLogger",
                init_args=Namespace(
                    save_dir=trainer.default_root_dir, name="lightning_logs", version=version, resume_step=resume_step
                ),
            )


def _latest_version(logs: Path) -> int | None:
    versions = [int(p.name.split("_")[1]) for p in logs.glob("version_*") if p.name.split("_")[1].isdigit()]
    return max(versions, default=None)


def _checkpoint_step(directory: Path) -> int | None:
    last = directory / "last.ckpt"
    if last.is_dir():  # a distributed checkpoint (FSDP): its loop state is in meta.pt
        last = last / "meta.pt"
    if not last.is_file():
        return None
    return int(torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def run_dir(cli: DPOCLI) -> Path:
    """The run's directory, holding config, checkpoints and export: the logger's version folder."""
    logger = cli.trainer.logger
    if logger is None:
        return Path(cli.trainer.default_root_dir)
    if getattr(logger, "log_dir", None):  # CSV, TensorBoard
        return Path(logger.log_dir)
    return Path(logger.save_dir or cli.trainer.default_root_dir) / str(logger.name) / str(logger.version)  # W&B


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show bad input as one line on stderr and exit with status 2 (a diverged run: 1), never as a traceback."""
    try:
        yield
    except InputError as err:
        print(f"lit_dpo: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingDiverged as err:
        print(f"lit_dpo: training stopped: {err}", file=sys.stderr)
        raise SystemExit(1) from None
