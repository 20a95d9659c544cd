"""The DPO LightningModule: a trainable policy and a frozen reference, wired to the objective and the metrics.

Data flow of a step: ``Batch`` (``lit_dpo.data``) -> per-sequence log-probs of the policy (``lit_dpo.scoring``)
and of the reference (``lit_dpo.reference``) -> per-pair tensors -> ``Objective`` (``lit_dpo.losses``) ->
losses and rewards -> ``PreferenceMetrics``. The models are assembled by ``lit_dpo.models``.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_dpo import optim
from lit_dpo.data.collate import Batch
from lit_dpo.data.protocol import PreferenceData, preference_data
from lit_dpo.errors import InputError, nonfinite_gradients, raise_if_gradients_not_finite, raise_if_not_finite
from lit_dpo.hf import BUNDLED, check_local, export_policy, load_tokenizer
from lit_dpo.losses import OPTIONS, build_objective
from lit_dpo.losses.unpaired import kl_reference_point
from lit_dpo.metrics import PreferenceMetrics, SourceMetrics
from lit_dpo.models import MODEL_OPTIONS, ModelSpec, Run, build_models, check_options
from lit_dpo.parallel import FSDPStrategy, compile_layers, is_sharded, shard
from lit_dpo.reference import Reference, cache_stages, check_start
from lit_dpo.resume import check_resume, run_settings
from lit_dpo.scoring import Logps, PairLogps, UnpairedLogps, score_sequences, split_scores


class DPOModule(L.LightningModule):
    """The policy, its frozen reference, the loss and the optimizer (``--model.*``).

    Args:
        model_name_or_path: Policy to train: a Hub id, a local HF folder, or ``bundled:SmolLM2-135M-Instruct``.
        ref_model_name_or_path: Frozen reference; defaults to a copy of the policy's starting weights.
            Not loaded for reference-free losses (simpo, orpo, sft).
        loss_type: Preference loss by name (``lit_dpo.losses.LOSSES``): sigmoid (DPO), robust, hinge, ipo,
            sigmoid_norm, exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down,
            discopop, sft, simpo, orpo; kto or apo_zero_unpaired for unpaired prompt/completion/label rows;
            or a list of them, summed with ``loss_weights`` (e.g. ``[sigmoid, sft]``).
        beta: Strength of the implicit KL penalty; for ipo, the regulariser tau; for orpo, lambda.
        label_smoothing: Label noise for robust (flip probability), exo_pair (epsilon), aot, aot_unpaired, simpo.
        loss_weights: One weight per ``loss_type`` when several are given (default: all 1).
        discopop_tau: Temperature of the discopop loss.
        simpo_gamma: Target reward margin of the simpo loss.
        desirable_weight: kto / apo_zero_unpaired: weight of the losses of desirable (label true) rows.
        undesirable_weight: kto / apo_zero_unpaired: weight of the losses of undesirable rows.
        use_weighting: WPO: weigh each pair's loss by how likely the policy is to produce both completions
            (``exp`` of their mean token log-prob, relative to the distribution's own; no gradient).
        ld_alpha: LD-DPO: completion tokens past the shorter completion's length count ``ld_alpha`` times
            in the log-probs of policy and reference (None: plain sums), against a bias towards length.
        precompute_ref_log_probs: Compute the reference's log-probs of every train and val pair in one pass
            before training, cache them on disk (``lit_dpo.reference.cached``, reused by later runs on the
            same data and reference) and free the reference: it is not in memory during training.
            None: on for a fit that trains on every pair at least once (so the pass adds no compute) with a
            separate, fixed reference over paired rows; else off.
        ref_sync_steps: TR-DPO: every this many optimizer steps, move the reference towards the policy
            (0: never). Works with LoRA (the adapters are partly merged into the base) and FSDP.
        ref_sync_alpha: TR-DPO mixing weight: ``ref <- alpha * policy + (1 - alpha) * ref``.
        ref_sync_epochs: Iterative DPO: at the start of every this many epochs (the rounds of online DPO,
            ``lit_dpo.data.OnlineDataModule``), the reference becomes the policy (a hard update; 0: never, the
            reference stays the initial model).
        lora_r: Train LoRA adapters of this rank (PEFT) instead of every weight; 0: full fine-tuning. The
            reference is then the base with adapters disabled (no second copy), unless
            ``ref_model_name_or_path`` names another model; the export merges the adapters.
        lora_alpha: LoRA scaling numerator (updates are scaled by ``lora_alpha / lora_r``).
        lora_dropout: Dropout on the adapters' input.
        lora_target_modules: Modules to adapt: PEFT's ``all-linear`` (every linear layer but the LM head),
            or a list of module names such as ``[q_proj, v_proj]``.
        learning_rate: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: Optimizer steps of linear warmup from ``learning_rate / warmup_steps``.
        lr_schedule: After warmup: constant, or linear / cosine decay to 0 at the last step.
        optimizer_in_backward: Update each weight as soon as its gradient is complete and free that gradient
            (``lit_dpo.optim``): the same update in less memory. None: on whenever it is exact (one process,
            no gradient accumulation or clipping, no fp16 loss scaling).
        dtype: Weight dtype of policy and reference; use ``--trainer.precision`` for mixed precision.
        disable_dropout: Set every dropout in the policy to 0, as TRL does by default.
        activation_checkpointing: Recompute each decoder layer's activations in the backward (less memory).
        compile: ``torch.compile`` each decoder layer: faster steps after a one-off compilation (measured in
            the README); needs a C++ compiler on CPUs, Triton on GPUs.
        trust_remote_code: Allow model code from the Hub (off: only transformers' own architectures).
        allow_changed: Resume a fit although these changed since its checkpoint was saved: ``data`` (the
            training examples), ``reference`` (the reference weights), or a setting by its command-line name
            (``data.batch_size``, ``model.beta``, ...). The CLI's ``--allow_changed``.
    """

    def __init__(
        self,
        model_name_or_path: str = BUNDLED,
        ref_model_name_or_path: Optional[str] = None,
        loss_type: Union[str, list[str]] = "sigmoid",
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        loss_weights: Optional[list[float]] = None,
        discopop_tau: float = 0.05,
        simpo_gamma: float = 0.5,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        use_weighting: bool = False,
        ld_alpha: Optional[float] = None,
        precompute_ref_log_probs: Optional[bool] = None,
        ref_sync_steps: int = 0,
        ref_sync_alpha: float = 0.6,
        ref_sync_epochs: int = 0,
        lora_r: int = 0,
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        lora_target_modules: Union[str, list[str]] = "all-linear",
        learning_rate: float = 5e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 5,
        lr_schedule: Literal["constant", "linear", "cosine"] = "constant",
        optimizer_in_backward: Optional[bool] = None,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        disable_dropout: bool = True,
        activation_checkpointing: bool = False,
        compile: bool = False,
        trust_remote_code: bool = False,
        allow_changed: Optional[list[str]] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # refuse bad options before loading anything; every loss option reaches the objective by name
        self.objective = build_objective(
            loss_type, loss_weights, use_weighting, ld_alpha, **{name: self.hparams[name] for name in OPTIONS}
        )
        check_options(self.objective, beta, precompute_ref_log_probs, ref_sync_steps, ref_sync_alpha, ref_sync_epochs)
        check_local(model_name_or_path, "--model.model_name_or_path")
        if ref_model_name_or_path is not None:
            check_local(ref_model_name_or_path, "--model.ref_model_name_or_path")
        self.policy: Optional[torch.nn.Module] = None
        self.reference: Optional[Reference] = None  # None for reference-free losses
        self.caches_reference = False  # decided when the models load, knowing the run (``should_cache``)
        self.compiled = False
        self.hooked_optimizer: Optional[optim.AdamWInBackward] = None
        self.last_sync_step = 0
        # before the first update, policy and reference must agree when the reference starts as the policy
        self.checks_start = ref_model_name_or_path in (None, model_name_or_path)
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

    def setup(self, stage: str) -> None:
        if self.data is not None:
            self.val_source_metrics.track({n: self.data.source_names.index(n) for n in self.data.val_source_names})

    def configure_model(self) -> None:
        # Lightning calls this for fit, validate and again on resume: load once, shard once, compile once
        if self.policy is None:
            self._load_models()
        frozen = self.reference.model if self.reference is not None else None
        if self.device_mesh is not None and not is_sharded(self.policy):  # ModelParallelStrategy: FSDP2
            strategy = self.trainer.strategy
            mesh = strategy.sharding_mesh if isinstance(strategy, FSDPStrategy) else self.device_mesh["data_parallel"]
            for model in (self.policy, frozen):
                if model is not None:
                    shard(model, mesh)
        if self.hparams.compile and not self.compiled:
            compile_layers(self.policy)
            if frozen is not None and not self.caches_reference:  # a one-off pass would not pay it back
                compile_layers(frozen)
            self.compiled = True

    def _load_models(self) -> None:
        hp, objective = self.hparams, self.objective
        spec = ModelSpec(**{name: hp[name] for name in MODEL_OPTIONS}, reference_moves=bool(hp.ref_sync_steps or hp.ref_sync_epochs))  # fmt: skip
        online = self.data is not None and self.data.online
        models = build_models(
            spec, Run(objective.needs_reference, objective.unpaired, online, self._trainer, self.data)
        )
        self.policy, self.reference, self.caches_reference = models.policy, models.reference, models.caches_reference
        if models.synced_reference is not None:
            # a synced reference is training state: in the module tree, so checkpoints (distributed ones too) hold it
            self.synced_reference = models.synced_reference

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

    def on_fit_start(self) -> None:
        if self.caches_reference:
            self._cache_reference(["train", "val"])

    def on_validation_start(self) -> None:
        if self.caches_reference and self.trainer.state.fn == "validate":
            self._cache_reference(["val"])

    def _cache_reference(self, stages: list[str]) -> None:
        hp = self.hparams
        settings = {"dtype": hp.dtype, "precision": str(self.trainer.precision), "ld_alpha": hp.ld_alpha}
        self.reference = cache_stages(self.reference, self.data, stages, self.trainer, settings)
        gc.collect()  # the live reference model, now unreferenced, is the largest thing to free

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
        if self._trainer is None or self.trainer.world_size == 1:
            return value
        return self.all_gather(value).mean()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.compute_loss(batch, self.train_metrics)

    def on_train_epoch_start(self) -> None:
        # iterative DPO: each round's reference is the policy it starts from (a resumed round has it restored)
        epochs = self.hparams.ref_sync_epochs
        if epochs and self.current_epoch > 0 and self.current_epoch % epochs == 0:
            self.reference.sync(self.policy, 1.0)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # TR-DPO, after every ref_sync_steps-th optimizer step (once, whatever the gradient accumulation)
        steps, step = self.hparams.ref_sync_steps, self.global_step
        if steps and step % steps == 0 and step != self.last_sync_step:
            self.reference.sync(self.policy, self.hparams.ref_sync_alpha)
            self.last_sync_step = step

    def fingerprints(self) -> dict[str, Any]:
        """What a checkpoint records so that a resumed run can check it is the same job (``lit_dpo.resume``)."""
        data_settings = self.data.training_settings() if self.data is not None else {}
        return {
            "data": self.data.fingerprint() if self.data is not None else None,
            "reference": self.reference.fingerprint if self.reference is not None else None,
            "settings": run_settings(self.hparams, data_settings, self.trainer) if self._trainer is not None else None,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lit_dpo"] = self.fingerprints()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is not None and self.trainer.state.fn == "fit":  # resuming: into the same job only
            allowed = set(self.hparams.allow_changed or [])
            check_resume(checkpoint.get("lit_dpo", {}), self.fingerprints(), allowed, str(self.trainer.ckpt_path))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        agree = self.trainer.strategy.reduce_boolean_decision
        if self.hooked_optimizer is not None:  # updated in the backward; a non-finite gradient was skipped
            raise_if_gradients_not_finite(self.hooked_optimizer.nonfinite_parameters(), self.global_step, agree)
        else:
            raise_if_gradients_not_finite(nonfinite_gradients(self.policy), self.global_step, agree)
        self._log_train_metrics(optimizer.param_groups[0]["lr"])

    def _log_train_metrics(self, lr: float) -> None:
        # once per optimizer step, so train/ metrics mean the same with or without gradient accumulation:
        # the exact mean over every pair of the step, on every rank
        values = {f"train/{k}": v for k, v in self.train_metrics.compute().items()}
        values["train/lr"] = lr
        self.log_dict(values, on_step=True, on_epoch=False, prog_bar=False)
        self.train_metrics.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.compute_loss(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        if self.val_metrics.has_updates:
            values = self.val_metrics.compute() | self.val_source_metrics.compute_and_reset()
            self.log_dict(
                {f"val/{k}": v for k, v in values.items()}, on_step=False, on_epoch=True
            )  # already synced over ranks by torchmetrics
        self.val_metrics.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        if self.hooked_optimizer is not None:
            self.hooked_optimizer.remove_hooks()  # a second fit: the previous optimizer must not step too
        in_backward = optim.in_backward(self._trainer, hp.optimizer_in_backward)
        optimizer, scheduler = optim.build(
            self.policy, hp.learning_rate, hp.weight_decay, hp.warmup_steps, hp.lr_schedule, in_backward,
            self._total_steps,
        )  # fmt: skip
        self.hooked_optimizer = optimizer if in_backward else None
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_steps(self) -> int:
        # read lazily, at the first decaying step: asking in configure_optimizers would reset the restored
        # dataloader state on resume (Lightning #20550)
        return self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches

    def save_pretrained(self, directory: Union[str, Path], tokenizer: Any = None) -> Path:
        """Write the policy as a plain Hugging Face folder (``AutoModelForCausalLM.from_pretrained`` reads it): LoRA
        adapters merged, the tokenizer beside it (the data module's, else the model's). Written whole or not at all;
        inside a distributed fit, call it on every rank (sharded weights are gathered)."""
        if self.policy is None:
            raise InputError("save_pretrained: the models are not loaded yet (configure_model, or fit first)")
        if tokenizer is None:
            has_own = self.data is not None and self.data.tokenizer is not None
            tokenizer = (
                self.data.tokenizer if has_own else load_tokenizer(self.tokenizer_name_or_path, self.trust_remote_code)
            )
        strategy = self.trainer.strategy if self._trainer is not None else None
        export_policy(self.policy, tokenizer, Path(directory), strategy)
        return Path(directory)
