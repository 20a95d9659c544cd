"""The DPO LightningModule. A step: ``Batch`` (``lit_dpo.data``) -> log-probs of the policy (``lit_dpo.scoring``) and
the reference (``lit_dpo.reference``) -> ``Objective`` (``lit_dpo.losses``) -> losses, rewards -> ``PreferenceMetrics``.
Models are assembled by ``lit_dpo.models``; the reference's schedule is a callback (``ReferenceSchedule``)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional, Union

import lightning as L
import torch
from huggingface_hub import ModelCard
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_dpo import optim, quantize
from lit_dpo.callbacks.same_job import SameJob
from lit_dpo.card import card_writer
from lit_dpo.data.collate import Batch
from lit_dpo.data.protocol import PreferenceData, preference_data
from lit_dpo.errors import InputError, nonfinite_gradients, raise_if_gradients_not_finite, raise_if_not_finite
from lit_dpo.hf import export_policy, is_vision_language, load_model, load_preprocessor, sparse_tied_embedding
from lit_dpo.losses import OPTIONS, build_objective
from lit_dpo.losses.unpaired import kl_reference_point
from lit_dpo.metrics import PreferenceMetrics, SourceMetrics
from lit_dpo.models import ModelSpec, Run, build_models, check_options, check_paths
from lit_dpo.options import DPOOptions
from lit_dpo.parallel import compile_layers, shard_over
from lit_dpo.reference import Reference, check_start
from lit_dpo.reference.schedule import ReferenceSchedule
from lit_dpo.scoring import Logps, PairLogps, UnpairedLogps, score_sequences, split_scores
from lit_dpo.scoring.lean import lean_blocks_apply, use_lean_blocks


class DPOModule(DPOOptions):
    """The policy, its frozen reference, the loss and the optimizer (``--model.*``).

    Wiring only: Lightning's hooks over the parts. Its options are ``DPOOptions``' (``lit_dpo.options``), documented
    there, in ``--help`` and by ``help(DPOModule)``."""

    __signature__ = inspect.signature(DPOOptions)  # what DPOModule(...) takes, for help() and notebooks

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # the options (``DPOOptions``), saved as self.hparams
        hp = self.hparams
        # refuse bad options before loading anything; every loss option reaches the objective by name
        options = {name: hp[name] for name in OPTIONS}
        self.objective = build_objective(hp.loss_type, hp.loss_weights, hp.use_weighting, hp.ld_alpha, **options)
        check_options(self.objective, hp.beta, hp.precompute_ref_log_probs, hp.ref_sync_steps, hp.ref_sync_alpha,
                      hp.ref_sync_epochs)  # fmt: skip
        check_paths(hp.model_name_or_path, hp.ref_model_name_or_path)
        quantize.check(hp.quantization, hp.lora_r)
        self.strict_loading = hp.quantization is None  # QLoRA checkpoints hold the adapters, not the 4-bit base
        self.policy: Optional[torch.nn.Module] = None
        self.reference: Optional[Reference] = None  # None for reference-free losses
        self.caches_reference = False  # decided when the models load, knowing the run (``should_cache``)
        self.compiled = False
        self.hooked_optimizer: Optional[optim.AdamWInBackward] = None
        # before the first update, policy and reference must agree when the reference starts as the policy
        self.checks_start = hp.ref_model_name_or_path in (None, hp.model_name_or_path)
        self.train_metrics, self.val_metrics = PreferenceMetrics(), PreferenceMetrics()
        self.val_source_metrics = SourceMetrics()  # val/<source>/... with several validation sources

    @property
    def tokenizer_name_or_path(self) -> str:
        """The tokenizer of the policy's data (``lit_dpo.data.protocol.TokenizerSource``)."""
        return self.hparams.model_name_or_path

    @property
    def trust_remote_code(self) -> bool:
        return self.hparams.trust_remote_code

    @property
    def data(self) -> Optional[PreferenceData]:
        """The attached data module, if it is one of lit_dpo's kind (``PreferenceData``)."""
        return preference_data(self._trainer)

    def configure_callbacks(self) -> list[L.Callback]:
        hp = self.hparams
        cache_settings = {"dtype": hp.dtype, "ld_alpha": hp.ld_alpha}
        schedule = ReferenceSchedule(hp.ref_sync_steps, hp.ref_sync_alpha, hp.ref_sync_epochs, cache_settings)
        return [schedule, SameJob(hp, hp.allow_changed or ())]  # SameJob: resume only into the same job

    def setup(self, stage: str) -> None:
        if self.data is not None:
            self.val_source_metrics.track({n: self.data.source_names.index(n) for n in self.data.val_source_names})

    def configure_model(self) -> None:
        # Lightning calls this for fit, validate and again on resume: load once, shard once, compile once
        if self.policy is None:
            models = build_models(
                ModelSpec.from_options(self.hparams), Run.of(self.objective, self.data, self._trainer)
            )
            self.policy, self.reference, self.caches_reference = models.policy, models.reference, models.caches_reference  # fmt: skip
            if models.synced_reference is not None:  # training state: in the module tree, so checkpoints hold it
                self.synced_reference = models.synced_reference
            world_size = self.trainer.world_size if self._trainer is not None else 1
            if world_size == 1:
                sparse_tied_embedding(self.policy)
            if lean_blocks_apply(world_size, self.hparams.compile):
                use_lean_blocks(self.policy)
        frozen = self.reference.model if self.reference is not None else None
        if self.device_mesh is not None:  # ModelParallelStrategy: FSDP2
            shard_over(self.trainer.strategy, self.device_mesh, self.policy, frozen)
        if self.hparams.compile and not self.compiled:  # compiling a once-used cached reference would not pay
            self.compiled = compile_layers(self.policy, None if self.caches_reference else frozen)

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> "DPOModule":
        # a frozen reference model is kept out of the module tree, so Lightning neither checkpoints it nor switches
        # it to train mode; it must still follow the module's moves and casts (devices, --trainer.precision=16-true)
        super()._apply(fn, *args, **kwargs)
        frozen = self.__dict__.get("reference")  # None while __init__ is still running
        if frozen is not None and frozen.model is not None and "synced_reference" not in self._modules:
            frozen.model._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True) -> "DPOModule":
        super().train(mode)
        if "synced_reference" in self._modules:
            self.synced_reference.eval()  # in the module tree, yet frozen within each step
        return self

    def logps(self, batch: Batch) -> Logps:
        """The batch's per-pair log-probs under the policy (with gradient) and the reference."""
        objective = self.objective
        policy = score_sequences(
            self.policy, batch, objective.scores_prompt, objective.ld_alpha, objective.use_weighting
        )
        lp = split_scores(policy, None if self.reference is None else self.reference.logps(batch), batch)
        if isinstance(lp, UnpairedLogps):
            lp.reference_point = kl_reference_point(lp, self._mean_over_ranks)
        return lp

    def compute_loss(self, batch: Batch, metrics: PreferenceMetrics) -> Tensor:
        """The mean loss of a batch, its metrics added to ``metrics``: one training or validation step."""
        self.objective.check_rows(batch.unpaired)  # before any compute
        lp = self.logps(batch)
        if self.training and self.global_step == 0 and self.checks_start and isinstance(lp, PairLogps):
            self.checks_start = False  # the first batch tells; the reference must start as the policy
            if (mismatch := check_start(lp, batch, next(self.policy.parameters()).dtype)) is not None:
                rank_zero_warn(mismatch)
        output = self.objective(lp, self.hparams.beta)
        if self.training:  # every rank agrees, so that no rank waits on one that stopped
            agree = self.trainer.strategy.reduce_boolean_decision if self._trainer is not None else None
            raise_if_not_finite({**lp.terms(), "loss": output.losses}, self.global_step, agree)
        metrics.update(lp, output, batch.weights)
        if metrics is self.val_metrics:
            self.val_source_metrics.update(lp, output, batch.weights, batch.sources)
        return output.losses.mean()

    def _mean_over_ranks(self, value: Tensor) -> Tensor:
        return value if self._trainer is None or self.trainer.world_size == 1 else self.all_gather(value).mean()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.compute_loss(batch, self.train_metrics)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        hooked = self.hooked_optimizer  # updated in the backward, where a non-finite gradient was skipped
        bad = hooked.nonfinite_parameters() if hooked is not None else nonfinite_gradients(self.policy)
        raise_if_gradients_not_finite(bad, self.global_step, self.trainer.strategy.reduce_boolean_decision)
        # once per optimizer step, so train/ metrics mean the same with or without gradient accumulation:
        # the exact mean over every pair of the step, on every rank
        values = {f"train/{k}": v for k, v in self.train_metrics.compute().items()}
        self.log_dict(values | {"train/lr": optimizer.param_groups[0]["lr"]}, on_step=True, on_epoch=False)
        self.train_metrics.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.compute_loss(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        if self.val_metrics.has_updates:  # torchmetrics has synced them over ranks
            values = self.val_metrics.compute() | self.val_source_metrics.compute_and_reset()
            self.log_dict({f"val/{k}": v for k, v in values.items()}, on_step=False, on_epoch=True)
        self.val_metrics.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        if self.hooked_optimizer is not None:
            self.hooked_optimizer.remove_hooks()  # a second fit: the previous optimizer must not step too
        hp = self.hparams
        optimizer, scheduler = optim.build(
            self.policy, self._trainer, hp.learning_rate, hp.weight_decay, hp.warmup_steps, hp.lr_schedule,
            hp.optimizer_in_backward,
        )  # fmt: skip
        self.hooked_optimizer = optimizer if isinstance(optimizer, optim.AdamWInBackward) else None
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def save_pretrained(
        self, directory: Union[str, Path], tokenizer: Any = None, card: Optional[ModelCard] = None
    ) -> Path:
        """Write the policy as a plain Hugging Face folder (``AutoModelForCausalLM.from_pretrained`` reads it): LoRA
        adapters merged, the tokenizer beside it (the data module's, else the model's), the model card (default:
        ``lit_dpo.card.model_card``). Written whole or not at all; in a distributed fit, call it on every rank."""
        if self.policy is None:
            raise InputError("save_pretrained: the models are not loaded yet (configure_model, or fit first)")
        vision = is_vision_language(self.tokenizer_name_or_path, self.trust_remote_code)
        if tokenizer is None and not vision:
            tokenizer = self.data.tokenizer if self.data is not None else None
        if tokenizer is None:  # the model's tokenizer, or a vision-language model's processor
            tokenizer = load_preprocessor(self.tokenizer_name_or_path, self.trust_remote_code)
        hp, policy = self.hparams, self.policy
        if hp.quantization:  # the adapters merge into the full-precision base, not into its 4-bit copy
            policy = quantize.unquantized(policy, load_model(hp.model_name_or_path, hp.dtype, hp.trust_remote_code))
        strategy = self._trainer.strategy if self._trainer is not None else None
        export_policy(policy, tokenizer, Path(directory), strategy, card_writer(self, self._trainer, card))
        return Path(directory)
