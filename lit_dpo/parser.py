"""The argument parser of lit_dpo's commands: a ``--help`` that starts with what lit_dpo is and how to run it, its
own option groups before Lightning's, and every parse mistake as one line (exit 2) instead of a usage dump."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import typing
from pathlib import Path
from typing import Any, NoReturn, Optional

import yaml
from jsonargparse import ArgumentParser, DefaultHelpFormatter
from lightning.pytorch.cli import LightningArgumentParser

from lit_dpo.data import OnlineDataModule, PreferenceDataModule
from lit_dpo.hf import BUNDLED

DESCRIPTION = """\
lit_dpo: Direct Preference Optimization (DPO) with PyTorch Lightning. Trains a policy on preference pairs
(prompt, chosen, rejected) against a frozen reference; logs train/ and val/ rewards, margins and accuracies
under --trainer.default_root_dir, and exports the policy in Hugging Face format.

examples:
  python -m lit_dpo.fit                                            # SmolLM2-135M-Instruct on the demo pairs (CPU)
  python -m lit_dpo.fit --data.path=pairs.jsonl --model.beta=0.1   # your pairs (prompt, chosen, rejected)
  python -m lit_dpo.fit --config recipes/base.yaml --config recipes/strategy/fsdp.yaml --trainer.devices=8
  python -m lit_dpo.fit --config recipes/base.yaml --ckpt_path=last                 # resume the newest run
  python -m lit_dpo.validate --data.val_path=held_out.jsonl --ckpt_path=runs/.../checkpoints/last.ckpt

Option groups: --model.* (the policy, reference, loss and optimizer), --data.* (--data.help: every data
option), lit_dpo's callbacks (--checkpoint.*, --generations.*, --health.*, --perf.*, --eval_harness.*,
--finish.*), the run (--config, --ckpt_path, --export_dir, --seed_everything), then Lightning's --trainer.*."""

DATA_DESCRIPTION = """\
The data report of a fit's --data options: reads, validates and tokenizes the rows as the fit would (no model is
loaded) and prints the rows kept, truncated and dropped per source, the token lengths and the duplicates.

examples:
  python -m lit_dpo.data --data.path=pairs.jsonl --model.model_name_or_path=Qwen/Qwen2.5-0.5B-Instruct
  python -m lit_dpo.data --config recipes/base.yaml --output report.json"""

PLAN_DESCRIPTION = """\
The memory plan of a fit with the same options (the model's config.json is read, nothing else): per device,
weights, gradients, optimizer state, reference, activations, logits and the strategy's buffers; the peak, whether
it fits, and the peak under each choice that moves it. Besides the fit's options: --memory_gb, --prompt_tokens,
--completion_tokens, --output.

examples:
  python -m lit_dpo.plan --config recipes/base.yaml --config recipes/strategy/fsdp.yaml \\
      --model.model_name_or_path=Qwen/Qwen2.5-7B-Instruct --trainer.accelerator=gpu --trainer.devices=8 --memory_gb=80
  python -m lit_dpo.plan --data.max_length=2048 --model.activation_checkpointing=true --output plan.json"""

USAGE = (
    "python -m lit_dpo.{command} [--config FILE] [--model.OPTION VALUE] [--data.OPTION VALUE] [--trainer.OPTION VALUE]"
)


class _Formatter(DefaultHelpFormatter):
    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))  # the examples keep their lines


class DPOArgumentParser(LightningArgumentParser):
    """LightningCLI's parser with lit_dpo's help and one-line errors. ``config_files`` are the ``--config`` files
    given, so that an unknown key in one of them is named with its file."""

    def __init__(self, *args: Any, command: str = "fit", **kwargs: Any) -> None:
        self.command = command
        kwargs.setdefault("description", PLAN_DESCRIPTION if command == "plan" else DESCRIPTION)
        kwargs.setdefault("usage", USAGE.format(command=command))
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs.setdefault("allow_abbrev", False)  # --trainer.max_step must not silently mean --trainer.max_steps
        super().__init__(*args, **kwargs)
        self.config_files: list[str] = []

    def format_help(self, formatter: Optional[argparse.HelpFormatter] = None) -> str:
        if self.command == "data":
            return data_help()
        # lit_dpo's groups first, Lightning's Trainer last, argparse's plumbing (linked arguments) out of sight
        groups = [g for g in self._action_groups if g.title != "Linked arguments"]
        trainer = [g for g in groups if g.title and g.title.startswith("Customize every aspect of training")]
        self._action_groups = [g for g in groups if g not in trainer] + trainer
        return super().format_help() if formatter is None else super().format_help(formatter)

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        sys.stderr.write(f"lit_dpo: error: {one_line(self, message)}\n")
        raise SystemExit(2)


def data_help() -> str:
    """``python -m lit_dpo.data --help``: only what the data report reads (it takes a fit's configs as they are)."""
    parser = ArgumentParser(
        prog="python -m lit_dpo.data", formatter_class=_Formatter, description=DATA_DESCRIPTION,
        usage="python -m lit_dpo.data [--config FILE] [--data.OPTION VALUE] [--model.model_name_or_path MODEL] "
        "[--output FILE]",
    )  # fmt: skip
    parser.add_argument("-c", "--config", help="A fit's config file (recipe); options it sets for other commands are "
                        "accepted and ignored.")  # fmt: skip
    parser.add_argument("--output", help="Also write the report as JSON here.")
    parser.add_argument("--model.model_name_or_path", default=BUNDLED,
                        help="The model whose tokenizer (and chat template) is used.")  # fmt: skip
    parser.add_argument("--model.trust_remote_code", default=False, help="Allow tokenizer code from the Hub.")
    parser.add_class_arguments(PreferenceDataModule, "data", skip={"tokenizer_name_or_path", "trust_remote_code"})
    return parser.format_help()


def one_line(parser: DPOArgumentParser, message: str) -> str:
    """jsonargparse's error ``message`` as one line that names the option (or config file and key) and what fits."""
    if found := re.search(r"nrecognized arguments: (--[\w.]+)", message):
        return _unknown(parser, found.group(1), "unknown option {}")
    if found := re.search(r"Group '([\w.]+)' does not accept option '(\w+)'", message):
        return _unknown(parser, f"{found.group(1)}.{found.group(2)}", "unknown key {}", files=parser.config_files)
    if found := re.search(r"Problem with given class_path '[\w.]+':\s+Option '(\w+)' is not accepted", message):
        return _unknown(parser, f"--data.{found.group(1)}", "unknown option {}")
    keys = re.findall(r'Parser key "([\w.]+)"', message)
    if keys == ["data"] and "Expected a dot import path" in message:
        return (f"--data: {_given(message)!r} is neither a data module class (lit_dpo.data.PreferenceDataModule, "
                "lit_dpo.data.OnlineDataModule) nor a config file")  # fmt: skip
    if keys:
        key = keys[-1] if keys[0] != "data" or len(keys) == 1 else f"data.{keys[-1]}"
        value = _given(message)
        allowed = _choices(parser, key)
        if allowed:
            return f"--{key}: {value!r} is not one of {', '.join(allowed)}"
        reason = _first_reason(message)
        return f"--{key}: {reason}" + (f" (got {value!r})" if value and value not in reason else "")
    return " ".join(line.strip() for line in message.strip().splitlines() if line.strip())


def _unknown(parser: DPOArgumentParser, option: str, template: str, files: Optional[list[str]] = None) -> str:
    names = _option_names(parser)
    close = difflib.get_close_matches(option.lstrip("-"), [n.lstrip("-") for n in names], n=1, cutoff=0.75)
    prefix = "--" if option.startswith("--") else ""
    line = template.format(option)
    where = next((f for f in files or [] if option in _yaml_keys(f)), None)
    if where is not None:
        line = f"{where}: {line}"
    return line + (f"; did you mean {prefix}{close[0]}?" if close else f"; see {_help_for(option)}")


def _help_for(option: str) -> str:
    return "--data.help" if option.lstrip("-").startswith("data.") else "--help"


def _option_names(parser: DPOArgumentParser) -> list[str]:
    """Every option the command takes, the data module's too (subclass options are absent from the actions)."""
    names = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    return sorted(set(names) | {f"--data.{name}" for name in _data_hints()})


def _data_hints() -> dict[str, Any]:
    """The type of every ``--data.*`` option, of either data module."""
    hints: dict[str, Any] = {}
    for cls in (PreferenceDataModule, OnlineDataModule):
        hints |= typing.get_type_hints(cls.__init__)
    hints.pop("return", None)
    return hints


def _yaml_keys(path: str) -> set[str]:
    """The dotted keys of a YAML config file (``model.beta``; ``data.init_args.x`` also as ``data.x``)."""
    try:
        content = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return set()
    keys: set[str] = set()

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                dotted = f"{prefix}{key}"
                keys.add(dotted)
                keys.add(dotted.replace(".init_args.", "."))
                walk(value, dotted + ".")

    walk(content, "")
    return keys


def _choices(parser: DPOArgumentParser, key: str) -> list[str]:
    """The values a Literal-typed option takes (``--trainer.precision``, ``--model.dtype``), else []."""
    action = next((a for a in parser._actions if a.dest == key), None)
    hint = getattr(action, "_typehint", None)  # jsonargparse's typed action keeps its type here
    if hint is None and key.startswith("data."):
        hint = _data_hints().get(key.split(".", 1)[1])
    return _literals(hint)


def _literals(hint: Any) -> list[str]:
    if typing.get_origin(hint) is typing.Literal:
        return [str(value) for value in typing.get_args(hint)]
    values: list[str] = []
    for arg in typing.get_args(hint):
        values += [v for v in _literals(arg) if v not in values]
    return values


def _given(message: str) -> str:
    """The value the user gave, as the message quotes it."""
    found = re.search(r"Given value: (.*)|Got value: (.*)", message)
    value = next((g for g in found.groups() if g is not None), "").strip() if found else ""
    return re.sub(r"NestedArg\(key='\w+', val='(.*)'\)", r"\1", value)


def _first_reason(message: str) -> str:
    """The line of a nested jsonargparse message that says what was wrong, in plain words."""
    lines = [line.strip().lstrip("- ") for line in message.splitlines() if line.strip()]
    reason = next((line for line in lines if re.match(r"(Expected|File does not exist|Option )", line)), lines[-1])
    reason = re.sub(r"\. Got value: .*", "", re.sub(r'.*Parser key "[\w.]+": ', "", reason))
    return re.sub(r"<class '(\w+)'>", r"\1", reason).replace("Expected a ", "expected ")
