"""Assembling what a DPO run trains and compares against: the policy (with LoRA adapters if asked) and the
reference (a separate frozen model, the LoRA base, or none for reference-free losses), decided from a
``ModelSpec`` and what the run is (``Run``). ``DPOModule.configure_model`` calls ``build_models`` once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal, Mapping, Optional, Union

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from lit_dpo import lora, quantize
from lit_dpo.data.protocol import PreferenceData
from lit_dpo.errors import InputError
from lit_dpo.hf import check_local, is_vision_config, load_model, load_policy
from lit_dpo.losses import Objective
from lit_dpo.reference import AdapterReference, ModelReference, Reference, should_cache, weights_fingerprint
from lit_dpo.reference.sync import check_sync_options
from lit_dpo.scoring.blocked import use_blocked_attention
from lit_dpo.scoring.gemm import use_onednn_linears


@dataclass(frozen=True)
class ModelSpec:
    """The ``DPOModule`` options that say which models to load and how (documented there)."""

    model_name_or_path: str
    ref_model_name_or_path: Optional[str] = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    disable_dropout: bool = True
    activation_checkpointing: bool = False
    attn_implementation: Optional[str] = None
    compile: bool = False
    lora_r: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: Union[str, list[str]] = "all-linear"
    quantization: Optional[Literal["nf4"]] = None
    precompute_ref_log_probs: Optional[bool] = None
    ld_alpha: Optional[float] = None
    freeze_vision: bool = True
    reference_moves: bool = False  # TR-DPO or iterative DPO: the reference is updated during training

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "ModelSpec":
        """The spec of ``DPOModule``'s options (its hparams)."""
        moves = bool(options["ref_sync_steps"] or options["ref_sync_epochs"])
        return cls(**{name: options[name] for name in MODEL_OPTIONS}, reference_moves=moves)

    @property
    def reference_source(self) -> str:
        return self.ref_model_name_or_path or self.model_name_or_path


# the DPOModule arguments a ModelSpec takes by name (reference_moves is derived from the sync options)
MODEL_OPTIONS = tuple(f.name for f in fields(ModelSpec) if f.name != "reference_moves")


@dataclass(frozen=True)
class Run:
    """What the fit being set up is, as far as assembling the models is concerned."""

    needs_reference: bool  # some loss reads the reference (``Objective.needs_reference``)
    unpaired: bool  # the loss takes unpaired rows (KTO): live KL samples
    online: bool = False  # pairs are sampled each round (``OnlineDataModule``): not known before training
    trainer: Any = None  # the Lightning trainer and its data: whether caching reference log-probs pays
    data: Optional[PreferenceData] = None

    @classmethod
    def of(cls, objective: Objective, data: Optional[PreferenceData], trainer: Any) -> "Run":
        return cls(objective.needs_reference, objective.unpaired, data is not None and data.online, trainer, data)


@dataclass
class Models:
    policy: torch.nn.Module
    reference: Optional[Reference]  # None for reference-free losses
    caches_reference: bool  # reference log-probs are computed once before training (``lit_dpo.reference.cached``)
    synced_reference: Optional[torch.nn.Module]  # a separate reference that moves: training state, checkpointed


def build_models(spec: ModelSpec, run: Run) -> Models:
    """Load the policy and, if a loss needs one, the reference; add LoRA adapters; fingerprint the reference."""
    if run.online and spec.precompute_ref_log_probs:
        raise InputError("--model.precompute_ref_log_probs needs every pair before training; online DPO makes "
                         "its pairs each round (the reference runs live)")  # fmt: skip
    if spec.quantization and run.trainer is not None and isinstance(run.trainer.strategy, ModelParallelStrategy):
        raise InputError("--model.quantization=nf4 cannot be sharded (FSDP): bitsandbytes' 4-bit weights are not "
                         "DTensors; use DDP or one device (the 4-bit base is small)")  # fmt: skip
    device = run.trainer.strategy.root_device if run.trainer is not None else torch.device("cpu")
    fitting = run.trainer is not None and run.trainer.state.fn == "fit"
    if spec.attn_implementation == "flex_attention" and device.type == "cpu" and fitting:
        raise InputError("--model.attn_implementation=flex_attention trains on GPUs only (PyTorch's FlexAttention "
                         "has no backward on CPUs); on a CPU use sdpa, the default")  # fmt: skip
    loading = (spec.dtype, spec.trust_remote_code, spec.quantization, device, spec.attn_implementation)
    policy = load_policy(spec.model_name_or_path, *loading, spec.disable_dropout, spec.activation_checkpointing)
    use_blocked_attention(policy, device, spec.compile)
    use_onednn_linears(policy, device, spec.compile)
    tower = vision_tower(policy)
    if tower is not None:
        tower.requires_grad_(not spec.freeze_vision)
    reference: Optional[Reference] = None
    separate = run.needs_reference and (spec.ref_model_name_or_path is not None or not spec.lora_r)
    if separate:
        frozen = load_model(spec.reference_source, *loading)
        use_blocked_attention(frozen, device, spec.compile)  # a live reference's layers are compiled too
        use_onednn_linears(frozen, device, spec.compile)
        reference = ModelReference(frozen, spec.ld_alpha)
    caches = should_cache(
        spec.precompute_ref_log_probs, run.needs_reference, separate, run.unpaired, spec.reference_moves or run.online,
        run.trainer, run.data,
    )  # fmt: skip
    # before sharding and adapters, every rank hashes the full reference weights: the cache key, and what a
    # resumed run checks it still trains against
    fingerprint = None
    if run.needs_reference:
        fingerprint = weights_fingerprint((reference.model if reference is not None else policy).state_dict())
    if spec.lora_r:
        targets = spec.lora_target_modules
        if tower is not None and targets == "all-linear":  # adapters on the language model, not the vision encoder
            targets = language_linears(policy)
        policy = lora.add_adapters(policy, spec.lora_r, spec.lora_alpha, spec.lora_dropout, targets)
        if spec.quantization:
            quantize.checkpoint_adapters_only(policy)
        if run.needs_reference and not separate:
            reference = AdapterReference(policy, spec.ld_alpha)
    if reference is not None:
        reference.fingerprint = fingerprint
    synced = reference.model if separate and spec.reference_moves else None
    return Models(policy, reference, caches, synced)


# where a vision-language model keeps its vision encoder and its language model, by model type: the families
# lit_dpo trains (tested)
VISION_TOWERS = {
    "idefics3": "model.vision_model", "smolvlm": "model.vision_model", "qwen2_vl": "model.visual",
    "qwen2_5_vl": "model.visual", "llava": "model.vision_tower", "gemma3": "model.vision_tower",
}  # fmt: skip
LANGUAGE_MODELS = {
    "idefics3": "model.text_model", "smolvlm": "model.text_model", "qwen2_vl": "model.language_model",
    "qwen2_5_vl": "model.language_model", "llava": "model.language_model", "gemma3": "model.language_model",
}  # fmt: skip


def language_linears(model: torch.nn.Module) -> list[str]:
    """The names of a vision-language model's language-model linear layers (LoRA's targets for it)."""
    prefix = LANGUAGE_MODELS[model.config.model_type] + "."
    return [name for name, m in model.named_modules() if name.startswith(prefix) and isinstance(m, torch.nn.Linear)]


def vision_tower(model: torch.nn.Module) -> Optional[torch.nn.Module]:
    """A vision-language model's vision encoder; None for a text model."""
    config = model.config
    if not is_vision_config(config):
        return None
    if config.model_type not in VISION_TOWERS:
        raise InputError(f"vision-language models of type {config.model_type} are not supported yet; lit_dpo trains "
                         f"{', '.join(VISION_TOWERS)} (SmolVLM's, Qwen2-VL's, LLaVA's and Gemma 3's families)")  # fmt: skip
    return model.get_submodule(VISION_TOWERS[config.model_type])


def check_options(
    objective: Objective, beta: float, precompute: Optional[bool], sync_steps: int, sync_alpha: float, sync_epochs: int
) -> None:
    """Refuse options that cannot work together, before any model loads."""
    check_sync_options(objective.needs_reference, precompute, sync_steps, sync_alpha)
    if sync_epochs:
        check_sync_options(objective.needs_reference, precompute, sync_epochs, 1.0, "ref_sync_epochs")
    if beta <= 0:
        raise InputError(f"--model.beta must be > 0, got {beta}")


def check_paths(model_name_or_path: str, ref_model_name_or_path: Optional[str]) -> None:
    """Refuse a local-looking model path that does not exist, before anything is looked up on the Hub."""
    check_local(model_name_or_path, "--model.model_name_or_path")
    if ref_model_name_or_path is not None:
        check_local(ref_model_name_or_path, "--model.ref_model_name_or_path")
