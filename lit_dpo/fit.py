"""``python -m lit_dpo.fit``: train with DPO, validate at the end, export the policy in Hugging Face format."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_dpo.cli import DPOCLI, say, user_errors
from lit_dpo.hf import check_export_dir, export_policy
from lit_dpo.report import draw_report
from lit_dpo.runs import run_directory


def main(args: Optional[list[str]] = None) -> None:
    with user_errors():
        cli = DPOCLI(args)
        trainer, model, data = cli.trainer, cli.model, cli.datamodule
        if cli.config.export_dir:
            check_export_dir(Path(cli.config.export_dir))  # before hours of training, not after
        model.resume_from, model.allowed_changes = cli.config.ckpt_path, set(cli.config.allow_changed or [])
        try:
            trainer.fit(model, datamodule=data, ckpt_path=cli.config.ckpt_path)
        except SIGTERMException:  # preempted: the checkpoint of this step is saved (ResumableCheckpoint)
            _stopped(cli)
            raise SystemExit(143) from None  # 128 + SIGTERM, as a process killed by it would report
        if trainer.interrupted:
            return
        if model.last_val_step != trainer.global_step and data.val_examples:
            # max_steps can stop mid-epoch after the last scheduled validation; every run ends with final metrics
            trainer.validate(model, datamodule=data, verbose=False)
        export_dir = Path(
            cli.config.export_dir or run_directory(cli.trainer) / "hf_model"
        )  # a W&B run's folder exists by now
        check_export_dir(export_dir)
        export_policy(model.policy, data.tokenizer, export_dir, trainer.strategy)
        _report(cli, export_dir)


@rank_zero_only
def _stopped(cli: DPOCLI) -> None:
    checkpoint = cli.trainer.checkpoint_callback
    saved = getattr(checkpoint, "last_model_path", "") if checkpoint is not None else ""
    where = f"checkpoint {saved}" if saved else "no checkpoint (checkpointing is off)"
    say(f"\nlit_dpo: stopped by SIGTERM at step {cli.trainer.global_step}; {where}; continue with --ckpt_path=last")


@rank_zero_only
def _report(cli: DPOCLI, export_dir: Path) -> None:
    final = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    summary = ", ".join(
        f"{k}={final[k]:.4f}" for k in ("val/loss", "val/rewards/accuracies", "val/rewards/margins") if k in final
    )
    directory = run_directory(cli.trainer)
    print(f"\nlit_dpo: {cli.trainer.global_step} steps; {summary}")
    print(f"lit_dpo: run directory  {directory}")
    csv_file = directory / "metrics.csv"
    print(f"lit_dpo: metrics        {csv_file if csv_file.exists() else type(cli.trainer.logger).__name__}")
    print(f"lit_dpo: trained policy {export_dir}  (AutoModelForCausalLM.from_pretrained)")
    report = draw_report(directory)
    if report is not None:
        print(f"lit_dpo: report         {report}  (redraw: python -m lit_dpo.report {directory})")


if __name__ == "__main__":
    main()
