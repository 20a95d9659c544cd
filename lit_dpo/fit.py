"""``python -m lit_dpo.fit``: train with DPO, validate at the end, export the policy in Hugging Face format."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from lightning.pytorch.utilities import rank_zero_only

from lit_dpo import lora
from lit_dpo.cli import DPOCLI, run_dir, user_errors
from lit_dpo.models import export_hf
from lit_dpo.parallel import full_state_dict


def main(args: Optional[list[str]] = None) -> None:
    with user_errors():
        cli = DPOCLI(args)
        trainer, model, data = cli.trainer, cli.model, cli.datamodule
        trainer.fit(model, datamodule=data, ckpt_path=cli.config.ckpt_path)
        if trainer.interrupted:
            return
        if model.last_val_step != trainer.global_step and data.val_pairs:
            # max_steps can stop mid-epoch after the last scheduled validation; every run ends with final metrics
            trainer.validate(model, datamodule=data, verbose=False)
        export_dir = Path(cli.config.export_dir or run_dir(cli) / "hf_model")
        policy, state_dict = _exportable(model.policy)
        if trainer.is_global_zero:
            export_hf(policy, data.tokenizer, export_dir, state_dict)
        trainer.strategy.barrier()
        _report(cli, export_dir)


def _exportable(policy: torch.nn.Module) -> tuple[torch.nn.Module, Optional[dict[str, torch.Tensor]]]:
    """The model to save and the weights to save in it: gathered on every rank when sharded (a collective),
    LoRA adapters merged into a plain HF model."""
    state_dict = full_state_dict(policy)  # None when not sharded; empty off rank 0 when sharded
    if lora.is_lora(policy):
        if state_dict is None:
            state_dict = policy.state_dict()
        if state_dict:  # local arithmetic on full tensors: never on shards, where matmuls would be collectives
            state_dict = lora.merged_state_dict(state_dict, lora.scaling(policy))
        policy = policy.get_base_model()
    return policy, state_dict


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
