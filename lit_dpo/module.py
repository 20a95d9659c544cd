"""The DPO LightningModule: a trainable policy and a frozen reference, wired to the loss and metrics."""

from __future__ import annotations

import contextlib
from typing import Any, Literal, Optional, Union

import lightning as L
import torch
from torch import Tensor

from lit_dpo import lora, optim, reference, reference_cache
from lit_dpo.errors import InputError, raise_if_not_finite
from lit_dpo.forward import score
from lit_dpo.logps import PairLogps
from lit_dpo.loss import SCORES_PROMPT, get_loss, is_unpaired_loss, loss_names, needs_reference
from lit_dpo.metrics import PreferenceMetrics, pair_metrics, unpaired_metrics
from lit_dpo.models import BUNDLED, load_model
from lit_dpo.parallel import compile_layers, is_sharded, shard


class DPOModule(L.LightningModule):
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
    ) -> None:
        """DPO on a causal language model.

        Args:
            model_name_or_path: Policy to train: a Hub id, a local HF folder, or ``bundled:SmolLM2-135M-Instruct``.
            ref_model_name_or_path: Frozen reference; defaults to a copy of the policy's starting weights.
                Not loaded for reference-free losses (simpo, orpo, sft).
            loss_type: Preference loss by name (``lit_dpo.loss.LOSSES``): sigmoid (DPO), robust, hinge, ipo,
                sigmoid_norm, exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down,
                discopop, sft, simpo, orpo; kto or apo_zero_unpaired for unpaired prompt/completion/label rows; or a list of them, summed with ``loss_weights`` (e.g. ``[sigmoid, sft]``).
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
                before training, cache them on disk (``lit_dpo.reference_cache``, reused by later runs on the
                same data and reference) and free the reference: it is not in memory during training.
                None: on for a fit that trains on every pair at least once (so the pass adds no compute) with a
                separate, fixed reference over paired rows; else off.
            ref_sync_steps: TR-DPO: every this many optimizer steps, move the reference towards the policy
                (0: never). Works with LoRA (the adapters are partly merged into the base) and FSDP.
            ref_sync_alpha: TR-DPO mixing weight: ``ref <- alpha * policy + (1 - alpha) * ref``.
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
            compile: ``torch.compile`` each decoder layer (about 13% faster steps on a CPU, after a one-off
                compilation of about 30 s; needs a C++ compiler on CPUs, Triton on GPUs).
            trust_remote_code: Allow model code from the Hub (off: only transformers' own architectures).
        """
        super().__init__()
        self.save_hyperparameters()
        # refuse bad options before loading anything
        self.loss_fn = get_loss(
            loss_type, label_smoothing, loss_weights, discopop_tau, simpo_gamma, desirable_weight, undesirable_weight
        )
        self.unpaired = is_unpaired_loss(loss_type)
        self.uses_reference = needs_reference(loss_type)
        self.scores_prompt = bool(SCORES_PROMPT.intersection(loss_names(loss_type)))
        _check_reference_options(self.uses_reference, precompute_ref_log_probs, ref_sync_steps, ref_sync_alpha)
        self.last_sync_step = 0
        self.caches_reference = False  # decided when the models load, knowing the run (reference.caches_logps)
        self.compiled = False
        self.train_metrics = PreferenceMetrics()
        self.val_metrics = PreferenceMetrics()
        self.policy: Optional[torch.nn.Module] = None
        self.reference: Optional[torch.nn.Module] = None
        self.last_val_step = -1  # global step of the last validation, so a fit can end with a fresh one

    def configure_model(self) -> None:
        # Lightning calls this for fit, validate and again on resume: load once, shard once, compile once
        if self.policy is None:
            self._load_models()
        if self.device_mesh is not None and not is_sharded(self.policy):  # ModelParallelStrategy: FSDP2
            shard(self.policy, self.device_mesh["data_parallel"])
            if self.reference is not None:
                shard(self.reference, self.device_mesh["data_parallel"])
                if not self.hparams.ref_sync_steps:
                    # out of the module tree: distributed checkpoints save and load every registered submodule,
                    # bypassing on_save/on_load_checkpoint, and a frozen reference has no place in them (a
                    # synced one does: it is part of the training state)
                    object.__setattr__(self, "reference", self._modules.pop("reference"))
        if self.hparams.compile and not self.compiled:
            compile_layers(self.policy)
            if self.reference is not None and not self.caches_reference:  # a one-off pass would not pay it back
                compile_layers(self.reference)
            self.compiled = True

    def _load_models(self) -> None:
        hp = self.hparams
        policy = load_model(hp.model_name_or_path, hp.dtype, hp.trust_remote_code).train()
        if hp.disable_dropout:
            for module in policy.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        if hp.activation_checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.uses_reference and (hp.ref_model_name_or_path is not None or not hp.lora_r):
            ref_path = hp.ref_model_name_or_path or hp.model_name_or_path
            self.reference = load_model(ref_path, hp.dtype, hp.trust_remote_code)
            self.reference.requires_grad_(False).eval()
        self.caches_reference = reference.caches_logps(self)
        if self.caches_reference:  # before sharding: every rank hashes full weights
            frozen = self.reference if self.reference is not None else policy  # LoRA: the base is the reference
            self.ref_weights_fingerprint = reference_cache.weights_fingerprint(frozen.state_dict())
        if hp.lora_r:
            policy = lora.add_adapters(policy, hp.lora_r, hp.lora_alpha, hp.lora_dropout, hp.lora_target_modules)
        self.policy = policy

    def on_fit_start(self) -> None:
        if self.caches_reference:
            reference.cache_logps(self, ["train", "val"])

    def on_validation_start(self) -> None:
        if self.hparams.precompute_ref_log_probs and self.uses_reference and self.trainer.state.fn == "validate":
            reference.cache_logps(self, ["val"])

    def train(self, mode: bool = True) -> "DPOModule":
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # Lightning switches every submodule to train mode; the reference stays frozen
        return self

    @torch.no_grad()  # not inference_mode: FSDP and autograd-saved tensors dislike inference tensors
    def reference_logps(self, batch: dict[str, Any]) -> Tensor:
        """Summed reference log-probs ``(2B,)`` of a batch (on the module's device): the reference model, or the
        LoRA policy's base."""
        with self.trainer.precision_plugin.forward_context() if self._trainer else contextlib.nullcontext():
            if self.reference is not None:
                return score(self.reference, batch, ld_alpha=self.hparams.ld_alpha).logps
            was_training = self.policy.training
            self.policy.eval()  # as a separate reference would be: no dropout
            try:
                with self.policy.disable_adapter():
                    return score(self.policy, batch, ld_alpha=self.hparams.ld_alpha).logps
            finally:
                self.policy.train(was_training)

    def _pair_logps(self, batch: dict[str, Any]) -> tuple[PairLogps, Tensor, Tensor]:
        """Policy and reference log-probs of the batch's pairs, with the ``(2B,)`` logit sums and token counts."""
        if self.unpaired != ("desirable" in batch):  # before any compute: the rows and the loss must agree
            raise InputError(
                "loss_type kto / apo_zero_unpaired need unpaired rows (prompt, completion, label), and unpaired rows "
                f"need one of them; got loss_type={self.hparams.loss_type} with "
                f"{'unpaired' if 'desirable' in batch else 'paired'} rows"
            )
        num_pairs = batch["num_pairs"]
        hp = self.hparams
        policy_logps, counts, logit_sums, wpo = score(
            self.policy, batch, self.scores_prompt, hp.ld_alpha, hp.use_weighting
        )
        if "ref_logps" in batch:  # cached (precompute_ref_log_probs)
            ref_logps = batch["ref_logps"].to(policy_logps.dtype)
        elif self.uses_reference:
            if self.reference is None and not lora.is_lora(self.policy):
                raise RuntimeError("a batch without cached reference log-probs, and no reference loaded")
            ref_logps = self.reference_logps(batch)
        else:  # reference-free losses never read it
            ref_logps = torch.zeros_like(policy_logps[: 2 * num_pairs])
        lp = PairLogps(*policy_logps[: 2 * num_pairs].chunk(2), *ref_logps.chunk(2), *counts[: 2 * num_pairs].chunk(2))
        if self.scores_prompt:
            lp.prompt, lp.prompt_tokens = policy_logps[2 * num_pairs :], counts[2 * num_pairs :]
        if wpo is not None:
            lp.wpo_weights = torch.exp(wpo[:num_pairs] + wpo[num_pairs : 2 * num_pairs])
        if self.unpaired:
            lp.desirable = batch["desirable"]
            lp.kl_reference = self._mean_over_ranks(lp.rejected_logratios.detach().mean()).clamp(min=0)
        return lp, logit_sums[: 2 * num_pairs], counts[: 2 * num_pairs]

    def _mean_over_ranks(self, value: Tensor) -> Tensor:
        if self._trainer is None or self.trainer.world_size == 1:
            return value
        return self.all_gather(value).mean()

    def _shared_step(self, batch: dict[str, Any], metrics: PreferenceMetrics) -> Tensor:
        lp, logit_sums, counts = self._pair_logps(batch)
        losses, chosen_rewards, rejected_rewards = self.loss_fn(lp, self.hparams.beta, self.hparams.label_smoothing)
        if lp.wpo_weights is not None:
            losses = losses * lp.wpo_weights
        if self.training:
            self._stop_if_not_finite(lp, losses)
        if self.unpaired:
            values = unpaired_metrics(losses, chosen_rewards, lp)
            metrics.update(values, logit_sums, counts, batch.get("weights"), desirable=lp.desirable)
        else:
            values = pair_metrics(losses, chosen_rewards, rejected_rewards, lp, self.uses_reference)
            metrics.update(values, logit_sums, counts, batch.get("weights"))
        return losses.mean()

    def _stop_if_not_finite(self, lp: PairLogps, losses: Tensor) -> None:
        terms = {
            "policy logps/chosen": lp.policy_chosen,
            "policy logps/rejected": lp.policy_rejected,
            "reference logps/chosen": lp.ref_chosen,
            "reference logps/rejected": lp.ref_rejected,
            "loss": losses,
        }
        # agree across ranks, so that no rank waits on one that stopped
        agree = self.trainer.strategy.reduce_boolean_decision if self._trainer is not None else None
        raise_if_not_finite(terms, self.global_step, agree)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, self.train_metrics)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # TR-DPO, after every ref_sync_steps-th optimizer step (once, whatever the gradient accumulation)
        steps, step = self.hparams.ref_sync_steps, self.global_step
        if steps and step % steps == 0 and step != self.last_sync_step:
            if self.reference is not None:
                reference.soft_update(self.policy, self.reference, self.hparams.ref_sync_alpha)
            else:
                reference.soft_update_lora(self.policy, self.hparams.ref_sync_alpha)
            self.last_sync_step = step

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # once per optimizer step, so train/ metrics mean the same with or without gradient accumulation:
        # the exact mean over every pair of the step, on every rank
        values = {f"train/{k}": v for k, v in self.train_metrics.compute().items()}
        values["train/lr"] = optimizer.param_groups[0]["lr"]
        self.log_dict(values, on_step=True, on_epoch=False, prog_bar=False)
        self.log("loss", values["train/loss"], prog_bar=True, logger=False)
        self.train_metrics.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        if self.val_metrics.has_updates:
            values = {f"val/{k}": v for k, v in self.val_metrics.compute().items()}
            self.log_dict(values, on_step=False, on_epoch=True)  # already synced over ranks by torchmetrics
            if "val/rewards/accuracies" in values:
                self.log("val_acc", values["val/rewards/accuracies"], prog_bar=True, logger=False)
            else:  # unpaired rows have no accuracy
                self.log("val_margin", values["val/rewards/margins"], prog_bar=True, logger=False)
        self.val_metrics.reset()
        if not self.trainer.sanity_checking:
            self.last_val_step = self.global_step

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = [p for p in self.policy.parameters() if p.requires_grad]
        previous = getattr(self, "_hooked_optimizer", None)
        if previous is not None:
            previous.remove_hooks()  # a second fit: the previous optimizer must not step too
        in_backward = optim.in_backward(self._trainer, hp.optimizer_in_backward)
        optimizer = optim.adamw(params, hp.learning_rate, hp.weight_decay, is_sharded(self.policy), in_backward)
        self._hooked_optimizer = optimizer if in_backward else None
        schedule = optim.lr_lambda(hp.warmup_steps, hp.lr_schedule, self._total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_steps(self) -> int:
        # read lazily, at the first decaying step: asking in configure_optimizers would reset the restored
        # dataloader state on resume (Lightning #20550)
        return self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a frozen reference is reloadable: checkpoints hold only what training changes (TR-DPO changes it)
        if self.hparams.ref_sync_steps:
            return
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("reference.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # keep strict loading for the policy by filling in the reference (a sharded one is out of the module
        # tree, and distributed checkpoints load without a "state_dict" entry)
        if (
            self._modules.get("reference") is not None
            and "state_dict" in checkpoint
            and not self.hparams.ref_sync_steps
        ):
            reference_state = {f"reference.{k}": v for k, v in self.reference.state_dict().items()}
            checkpoint["state_dict"].update(reference_state)


def _check_reference_options(uses_reference: bool, precompute: bool, sync_steps: int, sync_alpha: float) -> None:
    if sync_steps < 0 or not 0.0 < sync_alpha <= 1.0:
        raise InputError(f"ref_sync_steps must be >= 0 and 0 < ref_sync_alpha <= 1, got {sync_steps}, {sync_alpha}")
    if sync_steps and precompute:
        raise InputError("ref_sync_steps changes the reference during training: it cannot use precompute_ref_log_probs")
    if sync_steps and not uses_reference:
        raise InputError("ref_sync_steps has no effect with a reference-free loss_type")
