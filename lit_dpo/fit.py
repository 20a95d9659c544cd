"""``python -m lit_dpo.fit``: train with DPO, validate at the end, export the policy in Hugging Face format."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from lightning.pytorch.utilities import rank_zero_only

from lit_dpo.cli import DPOCLI, run_dir, user_errors
from lit_dpo.hf import export_policy


def main(args: Optional[list[str]] = None) -> None:
    with user_errors():
        cli = DPOCLI(args)
        trainer, model, data = cli.trainer, cli.model, cli.datamodule
        trainer.fit(model, datamodule=data, ckpt_path=cli.config.ckpt_path)
        if trainer.interrupted:
            return
        if model.last_val_step != trainer.global_step and data.val_examples:
            # max_steps can stop mid-epoch after the last scheduled validation; every run ends with final metrics
            trainer.validate(model, datamodule=data, verbose=False)
        export_dir = Path(cli.config.export_dir or run_dir(cli) / "hf_model")
        export_policy(model.policy, data.tokenizer, export_dir, trainer.is_global_zero)
        trainer.strategy.barrier()
        _report(cli, export_dir)


@rank_zero_only
def _report(cli: DPOCLI, export_dir: Path) -> None:
    final = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    summary = ", ".join(
        f"{k}={final[k]:.4f}" for k in ("val/loss", "val/rewards/accuracies", "val/rewards/margins") if k in final
    )
    directory = run_dir(cli)
    print(f"\nlit_dpo: {cli.trainer.global_step} steps; {summary}")
    print(f"lit_dpo: run directory  {directory}")
    csv_file = directory / "metrics.csv"
    print(f"lit_dpo: metrics        {csv_file if csv_file.exists() else type(cli.trainer.logger).__name__}")
    print(f"lit_dpo: trained policy {export_dir}  (AutoModelForCausalLM.from_pretrained)")


if __name__ == "__main__":
    main()
