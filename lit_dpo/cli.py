"""LightningCLI for lit_dpo: the options are the typed constructor arguments of the module and data module."""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Literal, NoReturn, Optional

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lit_dpo.callbacks import EvalHarness, FinishRun, RunLock, Throughput, TrainingHealth, WinRate
from lit_dpo.callbacks.progress import DPOModelSummary, DPOProgressBar, quiet_third_party_noise
from lit_dpo.checkpoints import (
    AtomicCheckpointIO,
    QuietSigterm,
    ResumableCheckpoint,
    check_distributed_checkpoint,
    checkpoint_step,
    find_resumable,
)
from lit_dpo.data import PreferenceDataModule
from lit_dpo.errors import InputError, SaveFailed, TrainingDiverged, describe
from lit_dpo.module import DPOModule
from lit_dpo.parser import DPOArgumentParser
from lit_dpo.resume import settings_from_config

TRAINER_DEFAULTS = {
    "default_root_dir": "runs",
    "max_epochs": 1,
    "precision": "32-true",
    "log_every_n_steps": 1,
    "num_sanity_val_steps": 0,  # every fit ends with a full validation; a partial one first only costs time
}


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Write ``config.yaml`` to the run directory and send the resolved config to the logger (e.g. W&B), once the
    run has loaded its models and restored and checked what it resumes (``lit_dpo.callbacks.SameJob``): a
    refused resume leaves the run directory as it was."""

    def setup(self, trainer: Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pass  # see on_fit_start

    def on_train_start(self, trainer: Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path:  # the run's recorded config.yaml stays as it was; the resumed run's goes beside it
            self.config_filename = f"config_resumed_at_step_{trainer.global_step}.yaml"
        super().setup(trainer, pl_module, "fit")  # after the checkpoint is restored (and checked)

    def on_validation_start(self, trainer: Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            super().setup(trainer, pl_module, "validate")

    def save_config(self, trainer: Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


class DPOCLI(LightningCLI):
    """The CLI of ``python -m lit_dpo.fit`` and ``python -m lit_dpo.validate``: no subcommand, plus ``--ckpt_path``."""

    def __init__(self, args: Optional[list[str]] = None, command: Literal["fit", "validate", "data"] = "fit") -> None:
        _quiet_warnings()
        self._config_files = _config_files(sys.argv[1:] if args is None else args)
        self.command = command
        super().__init__(
            DPOModule,
            PreferenceDataModule,
            subclass_mode_data=True,  # --data=lit_dpo.data.OnlineDataModule; --data.path alone: preference pairs
            run=False,
            args=args,
            seed_everything_default=42,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_callback=LoggerSaveConfigCallback,
            save_config_kwargs={"overwrite": True},  # validate after fit in one run dir (Lightning #17115)
            auto_configure_optimizers=False,
            parser_class=DPOArgumentParser,
            parser_kwargs={"command": command},
        )

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        parser.config_files = self._config_files  # an unknown key is named with its file
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.set_defaults({"data": {"class_path": "lit_dpo.data.PreferenceDataModule"}})
        parser.link_arguments("model.model_name_or_path", "data.init_args.tokenizer_name_or_path")
        parser.link_arguments("model.trust_remote_code", "data.init_args.trust_remote_code")
        parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
        parser.add_lightning_class_args(WinRate, "generations")
        parser.add_lightning_class_args(TrainingHealth, "health")
        parser.add_lightning_class_args(Throughput, "perf")
        parser.add_lightning_class_args(EvalHarness, "eval_harness")  # before FinishRun: the card shows its table
        parser.add_lightning_class_args(FinishRun, "finish")
        parser.add_argument(
            "--ckpt_path",
            type=Optional[str],
            default=None,
            help="Checkpoint to resume or validate: a path; 'last', the newest run's resumable checkpoint (an error "
            "when there is none); 'auto', the same or a fresh start (for requeued cluster jobs).",
        )
        parser.add_argument(
            "--allow_changed",
            type=Optional[list[str]],
            default=None,
            help="Resume although these changed since the checkpoint was saved: data (the training examples), "
            "reference (its weights), or settings by name as the refusal lists them (data.batch_size, model.beta, ...).",
        )
        parser.add_argument(
            "--export_dir",
            type=Optional[str],
            default=None,
            help="Where fit writes the trained policy in HF format (default: <run dir>/hf_model).",
        )
        parser.link_arguments("export_dir", "finish.export_dir")
        parser.link_arguments("allow_changed", "model.allow_changed")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, ImportError) as err:  # a class whose package is missing: one line, not jsonargparse's dump
            refused = _in_chain(err, InputError)  # a --data option refused (subclass mode wraps it in a ValueError)
            if refused is not None:
                raise refused from None
            missing = _missing_package(err)
            if missing is not None:
                raise InputError(missing) from None
            reason = _class_failure(str(err))
            if reason is None:
                raise
            # a configured class refused its arguments (a cluster environment its variables, say): its own words
            named = re.search(r"class_path='([\w.]+)'", str(err))
            raise InputError(f"{named.group(1) if named else 'a configured class'}: {reason}") from None

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        # lit_dpo's progress bar and summary by default, unless turned off or replaced by the user's own
        user_callbacks = config.get("callbacks") or []
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in user_callbacks
        ):
            callbacks = [*callbacks, DPOProgressBar()]
        if config.get("enable_model_summary") is not False and not any(
            isinstance(c, ModelSummary) for c in user_callbacks
        ):
            callbacks = [*callbacks, DPOModelSummary()]
        callbacks = [*callbacks, RunLock()]  # one fit at a time writes into a run directory
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ResumableCheckpoint)]
        for kind in (WinRate, FinishRun):  # --trainer.callbacks+=lit_dpo.callbacks.WinRate replaces ours
            if any(isinstance(c, kind) for c in user_callbacks):
                callbacks = [c for c in callbacks if not isinstance(c, kind)]
        trainer = super()._instantiate_trainer(config, callbacks)
        trainer._signal_connector = QuietSigterm(trainer)  # registered at fit start
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user chose
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def before_instantiate_classes(self) -> None:
        trainer, ckpt_path = self.config.trainer, self.config.get("ckpt_path")
        run = None
        if ckpt_path in ("last", "auto"):
            data = self.config.data.init_args if self.config.data is not None else Namespace()
            wanted = settings_from_config(
                self.config.model.as_dict(), data.as_dict(), self.config.get("seed_everything")
            )
            allowed = frozenset(self.config.get("allow_changed") or [])
            run, self.config.ckpt_path = find_resumable(Path(trainer.default_root_dir), ckpt_path, wanted, allowed)
        elif ckpt_path and self.command == "fit" and Path(ckpt_path).parent.name == "checkpoints":
            run = Path(ckpt_path).parent.parent  # a run's own checkpoint, named: the fit continues that run
        if self.config.ckpt_path and Path(self.config.ckpt_path).is_dir():  # whatever the strategy that loads it
            check_distributed_checkpoint(Path(self.config.ckpt_path))
        if _is_online(self.config.data) and not trainer.reload_dataloaders_every_n_epochs:
            trainer.reload_dataloaders_every_n_epochs = 1  # each epoch is a round with new pairs
        if str(getattr(trainer.logger, "class_path", "")).endswith("WandbLogger"):
            if trainer.logger.init_args.get("save_dir") in (None, "."):  # W&B's default: the working directory
                trainer.logger.init_args.save_dir = trainer.default_root_dir  # the run's files under its root
            if run is not None:  # continue the same W&B run (its id names the run directory): one history
                trainer.logger.init_args.id = trainer.logger.init_args.version = run.name
        # CSV is the default logger, under --trainer.default_root_dir (Lightning's own default would be
        # TensorBoard whenever it happens to be installed)
        if trainer.logger in (None, True):
            # resuming: continue in the run directory of the checkpoint, keeping its metrics up to its step
            logs = Path(trainer.default_root_dir) / "lightning_logs"
            version = int(run.name.split("_")[1]) if run is not None and run.parent == logs else None
            resume_step = None if version is None else checkpoint_step(Path(self.config.ckpt_path))
            trainer.logger = Namespace(
                class_path="lit_dpo.loggers.ResumableCSVLogger",
                init_args=Namespace(
                    save_dir=trainer.default_root_dir, name="lightning_logs", version=version, resume_step=resume_step
                ),
            )


def _quiet_warnings() -> None:
    # the frozen reference is in eval mode on purpose; Lightning would warn about it at every fit
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
    # val/ and train/ values come from torchmetrics, already reduced over ranks; Lightning cannot know that
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|train)/")
    quiet_third_party_noise()


def _config_files(args: list[str]) -> list[str]:
    """The files given with ``--config FILE``, ``--config=FILE`` or ``-c FILE``."""
    files = [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
    return files + [value for flag, value in zip(args, args[1:]) if flag in ("--config", "-c")]


# jsonargparse's own words around a class's failure, as it tries each type a value could have
_BOILERPLATE = re.compile(
    r"(Not a valid subclass|Subclass types expect|a (class path|dict)|Does not validate|Subtypes:|Errors:|Got value|"
    r"Given value|Import path .* does not correspond|Expected a|Problem with given class_path|Parser key)"
)


def _class_failure(message: str) -> Optional[str]:
    """What a configured class said when it refused its arguments, found in jsonargparse's nested message; None if
    the message holds nothing but jsonargparse's own words."""
    lines = [line.strip().lstrip("- ").strip() for line in message.splitlines()]
    return next((line for line in lines if line and not _BOILERPLATE.match(line)), None)


def _in_chain(err: BaseException, kind: type) -> Optional[BaseException]:
    """The first exception of type ``kind`` among ``err`` and its causes."""
    seen: list[BaseException] = []
    cause: Optional[BaseException] = err
    while cause is not None and cause not in seen and not isinstance(cause, kind):
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    return cause if isinstance(cause, kind) else None


def _is_online(data: Any) -> bool:
    """Whether ``--data`` names an online data module (one that samples its pairs each epoch)."""
    class_path = str(getattr(data, "class_path", "") or "")
    module_name, _, name = class_path.rpartition(".")
    try:
        return bool(getattr(getattr(importlib.import_module(module_name), name), "online", False))
    except (ImportError, AttributeError, ValueError):
        return False  # jsonargparse names the problem when it builds the class


def _missing_package(err: BaseException) -> Optional[str]:
    """'<class path> needs <what>' when a configured class (an optional logger: W&B, TensorBoard, MLflow, ...)
    failed because a package is not installed; None for any other parse error."""
    cause = _in_chain(err, ImportError)
    message = str(cause).strip().splitlines()[0] if cause is not None else ""
    if cause is None:
        found = re.search(r"(ModuleNotFoundError|ImportError): (.+)", str(err))
        if found is None and not re.search(r"not (met|available|installed)", str(err)):
            return None
        message = found.group(2) if found else str(err).splitlines()[-1]
    class_path = re.search(r"class_path '([\w.]+)'", str(err))
    what = class_path.group(1) if class_path else "a configured class"
    return f"{what} needs a package that is not installed: {message.strip()}"


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show bad input as one line on stderr and exit with status 2 (a diverged run: 1), never as a traceback."""
    try:
        yield
    except InputError as err:
        say(f"lit_dpo: error: {err}")
        raise SystemExit(2) from None
    except TrainingDiverged as err:
        say(f"lit_dpo: training stopped: {err}")
        raise SystemExit(1) from None
    except SaveFailed as err:
        say(f"lit_dpo: error: {err}")
        raise SystemExit(1) from None
    except Exception as err:
        if type(err).__name__ != "UsageError" or not type(err).__module__.startswith("wandb"):
            raise
        # W&B without an API key (wandb is imported only when its logger is used)
        say(f"lit_dpo: error: W&B: {describe(err)}; run `wandb login`, or set WANDB_MODE=offline to log locally")
        raise SystemExit(2) from None
    finally:
        end_process_group()


class CommandParser(ArgumentParser):
    """The parser of lit_dpo's smaller commands (``python -m lit_dpo.export``, ``python -m lit_dpo.eval``): a
    mistake is one line, ``lit_dpo.<command>: error: ...``, and exit status 2."""

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:
        say(f"{self.prog.split()[-1]}: error: {message.splitlines()[0]}")
        raise SystemExit(2)


def say(line: str) -> None:
    """One line on stderr in a single write, so that the lines of several ranks sharing it never interleave."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def end_process_group() -> None:
    """Leave the process group before the interpreter exits: left to exit, gloo's threads can abort the process
    ("terminate called without an active exception") after a run that succeeded."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
