"""The ``--model.*`` options: ``DPOOptions.__init__`` is the typed, documented signature LightningCLI reads (the
command-line contract), saved as the module's hparams. ``DPOModule`` (``lit_dpo.module``) inherits it and wires the
parts from ``self.hparams``."""

from __future__ import annotations

from typing import Literal, Optional, Union

import lightning as L

from lit_dpo.hf import BUNDLED


class DPOOptions(L.LightningModule):
    """The options of ``DPOModule`` (``--model.*``): what LightningCLI reads; docs/ explains each in full.

    Args:
        model_name_or_path: Policy to train: a Hub id, a local HF folder, or ``bundled:SmolLM2-135M-Instruct``.
        ref_model_name_or_path: Frozen reference (default: the policy's starting weights; none for reference-free losses).
        loss_type: A loss of ``lit_dpo.losses.LOSSES`` (sigmoid is DPO; kto for unpaired rows), or a list of them.
        beta: Strength of the implicit KL penalty (ipo's tau, orpo's lambda).
        label_smoothing: Label noise for robust, exo_pair, aot, aot_unpaired and simpo.
        loss_weights: One weight per ``loss_type`` when several are summed (default: all 1).
        discopop_tau: Temperature of the discopop loss.
        simpo_gamma: Target reward margin of the simpo loss.
        desirable_weight: kto / apo_zero_unpaired: weight of the desirable (label true) rows' losses.
        undesirable_weight: kto / apo_zero_unpaired: weight of the undesirable rows' losses.
        use_weighting: WPO: weigh each pair's loss by how likely the policy is to produce both completions.
        ld_alpha: LD-DPO: weight of completion tokens past the shorter completion's length (None: plain sums).
        precompute_ref_log_probs: Cache the reference's log-probs in one pass before training (None: when it pays).
        ref_sync_steps: TR-DPO: move the reference towards the policy every this many optimizer steps (0: never).
        ref_sync_alpha: TR-DPO mixing weight: ``ref <- alpha * policy + (1 - alpha) * ref``.
        ref_sync_epochs: Iterative DPO: the reference becomes the policy every this many epochs (0: never).
        lora_r: Train LoRA adapters of this rank instead of every weight (0: full fine-tuning).
        lora_alpha: LoRA scaling numerator (updates are scaled by ``lora_alpha / lora_r``).
        lora_dropout: Dropout on the adapters' input.
        lora_target_modules: Modules to adapt: ``all-linear`` (PEFT's) or names such as ``[q_proj, v_proj]``.
        quantization: QLoRA: ``nf4`` holds the frozen base in 4 bits under the LoRA adapters (bitsandbytes).
        learning_rate: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: Optimizer steps of linear warmup from ``learning_rate / warmup_steps``.
        lr_schedule: After warmup: constant, or linear / cosine decay to 0 at the last step.
        optimizer_in_backward: Update each weight as soon as its gradient is complete (None: whenever exact).
        dtype: Weight dtype of policy and reference; ``--trainer.precision`` for mixed precision.
        disable_dropout: Set every dropout in the policy to 0, as TRL does by default.
        activation_checkpointing: Recompute each decoder layer's activations in the backward (less memory).
        attn_implementation: transformers' attention: ``sdpa``, ``eager``, ``flex_attention`` (block masks that skip
            what prefix sharing masks out), ``flash_attention_2`` (padded rows only). None: transformers' default.
            On a CPU, sdpa runs packed rows one example at a time (``lit_dpo.scoring.blocked``; text models).
        freeze_vision: With a vision-language model (SmolVLM's family): keep its vision encoder frozen, training
            the connector and the language model (as LLaVA's and LLaMA-Factory's DPO recipes do).
        compile: ``torch.compile`` each decoder layer (needs a C++ compiler on CPUs, Triton on GPUs); compiled
            layers keep transformers' sdpa and autograd's MLP and norm backwards (``lit_dpo.scoring.lean``).
        trust_remote_code: Allow model code from the Hub (off: only transformers' own architectures).
        allow_changed: Resume although these changed: ``data``, ``reference``, or settings like ``model.beta``.
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
        quantization: Optional[Literal["nf4"]] = None,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 5,
        lr_schedule: Literal["constant", "linear", "cosine"] = "constant",
        optimizer_in_backward: Optional[bool] = None,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        disable_dropout: bool = True,
        activation_checkpointing: bool = False,
        attn_implementation: Optional[Literal["sdpa", "eager", "flex_attention", "flash_attention_2"]] = None,
        freeze_vision: bool = True,
        compile: bool = False,
        trust_remote_code: bool = False,
        allow_changed: Optional[list[str]] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
