"""Fixtures for the parity tests: one step of a TRL trainer, and one step of lit_dpo, on the same rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from lit_dpo.hf import load_tokenizer


@pytest.fixture(scope="session")
def trl_metrics() -> Callable[..., dict[str, Any]]:
    """``trl_metrics(kind, rows, output_dir, policy_dir, ref_dir=None, **config)``: the loss and logged metrics of
    TRL's ``{kind}Trainer`` (DPO, KTO; CPO, ORPO from ``trl.experimental``) over ``rows`` as one batch, in fp32."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    def run(kind: str, rows: list[dict], output_dir: Path, policy_dir: str, ref_dir: Optional[str] = None, **config):
        home = trl if kind in ("DPO", "KTO") else __import__(f"trl.experimental.{kind.lower()}", fromlist=["x"])
        config_cls, trainer_cls = getattr(home, f"{kind}Config"), getattr(home, f"{kind}Trainer")
        # TRL defaults to bf16 autocast; lit_dpo to 32-true: compare both in fp32
        args = config_cls(output_dir=str(output_dir / "trl"), report_to="none", use_cpu=True, bf16=False, **config)
        models = {"model": AutoModelForCausalLM.from_pretrained(policy_dir)}
        if ref_dir is not None:
            models["ref_model"] = AutoModelForCausalLM.from_pretrained(ref_dir)
        trainer = trainer_cls(
            **models, args=args, train_dataset=Dataset.from_list(rows), processing_class=load_tokenizer(policy_dir)
        )
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
        trainer.model.train()
        if kind in ("CPO", "ORPO"):
            loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch, "train")
            return {"loss": loss.item(), **metrics}
        loss = trainer._compute_loss(trainer.model, batch, return_outputs=False)
        return {"loss": loss.item()} | {k: v[-1] for k, v in trainer._metrics["train"].items()}

    return run


@pytest.fixture(scope="session")
def lit_metrics(dpo_module, make_batch, step_metrics) -> Callable[..., dict[str, float]]:
    """``lit_metrics(rows, layout, **options)``: lit_dpo's loss and metrics over ``rows`` as one batch of ``layout``,
    for a ``DPOModule(**options)``, tokenized with the policy's tokenizer."""

    def run(rows: list[dict], layout: str, **options: Any) -> dict[str, float]:
        module = dpo_module(**options)
        batch = make_batch(rows, layout, tokenizer=load_tokenizer(options["model_name_or_path"]))
        return step_metrics(module, batch)

    return run
