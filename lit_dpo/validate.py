"""``python -m lit_dpo.validate``: evaluate policy against reference on the validation pairs, no training."""

from __future__ import annotations

from typing import Optional

from lightning.pytorch.utilities import rank_zero_only

from lit_dpo.cli import DPOCLI, user_errors
from lit_dpo.errors import InputError
from lit_dpo.runs import run_directory


def main(args: Optional[list[str]] = None) -> None:
    with user_errors():
        cli = DPOCLI(args, command="validate")
        cli.datamodule.setup("validate")
        # online DPO samples its validation pairs from held-out prompts (or reads them from the checkpoint)
        if not (cli.datamodule.val_examples or cli.datamodule.held_out_prompts(1)):
            raise InputError("no validation pairs: pass --data.val_path or a --data.val_split above 0")
        cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path, verbose=False)
        _report(cli)


@rank_zero_only
def _report(cli: DPOCLI) -> None:
    for key, value in sorted(cli.trainer.callback_metrics.items()):
        if key.startswith("val/"):
            print(f"{key:24s} {float(value):.6f}")
    print(f"lit_dpo: metrics {run_directory(cli.trainer) / 'metrics.csv'}")


if __name__ == "__main__":
    main()
