"""``python -m lit_dpo.data``: the data report of a run's ``--data.*`` options, without loading any model.

    python -m lit_dpo.data --data.path=hh.jsonl --model.model_name_or_path=Qwen/Qwen2.5-0.5B-Instruct
    python -m lit_dpo.data --config recipes/base.yaml --output report.json

It takes the options and configs of ``python -m lit_dpo.fit`` (so a recipe works as it is), reads, validates and
tokenizes the data as a fit would, and prints the report (``lit_dpo.data.summary``); ``--output`` also writes
it as JSON. Bad input stops it as it stops a fit: one line naming the file, the row and the field, exit 2.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Optional

from lightning.pytorch.cli import LightningArgumentParser
from rich.console import Console

from lit_dpo.cli import DPOCLI, user_errors
from lit_dpo.data.datamodule import PreferenceDataModule
from lit_dpo.data.summary import build_report, print_report
from lit_dpo.errors import InputError


class DataReportCLI(DPOCLI):
    """The fit command line, where only the data module is made (no trainer, no model)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--output", type=Optional[str], default=None, help="Also write the report as JSON here.")

    def instantiate_classes(self) -> None:
        data = self.config.data
        module_name, _, name = data.class_path.rpartition(".")
        if getattr(importlib.import_module(module_name), name) is not PreferenceDataModule:
            raise InputError(f"python -m lit_dpo.data reports preference pairs read from files; {data.class_path} "
                             "makes its pairs during training (they are written to the run directory)")  # fmt: skip
        self.datamodule = PreferenceDataModule(**data.init_args.as_dict())


def main(args: Optional[list[str]] = None) -> None:
    with user_errors():
        cli = DataReportCLI(args, command="data")
        cli.datamodule.setup("fit")
        report = build_report(cli.datamodule)
        print_report(report, Console())
        if cli.config.output:
            Path(cli.config.output).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            print(f"lit_dpo: report written to {cli.config.output}")


if __name__ == "__main__":
    main()
