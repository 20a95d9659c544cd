"""From a fit's options (``--model.*``, ``--data.*``, ``--trainer.*``) to the ``Setup`` the estimate reads: which
strategy over how many processes, which precision, which reference, which rows."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Mapping, Optional

import torch

from lit_dpo import optim
from lit_dpo.errors import InputError
from lit_dpo.losses import Objective
from lit_dpo.planning.estimate import ReferenceKind, Setup, Strategy
from lit_dpo.planning.shape import layer_activations, load_config, model_shape
from lit_dpo.scoring.lean import lean_blocks_apply
from lit_dpo.scoring.lm_head import CHUNK_ELEMENTS, GPU_CHUNK_ELEMENTS

LORA_R_SUGGESTED = 16  # the rank the plan's "use LoRA" alternative assumes when no --model.lora_r is given


@dataclass(frozen=True)
class Hardware:
    """Processes and devices, from ``--trainer.accelerator``, ``devices``, ``num_nodes`` and ``strategy``."""

    accelerator: str  # cpu or gpu
    devices: int  # processes per node
    nodes: int
    strategy: Strategy
    hsdp: bool = False

    @property
    def world_size(self) -> int:
        return self.devices * self.nodes

    @property
    def shard_size(self) -> int:
        return self.devices if self.hsdp else self.world_size


def hardware(trainer: Mapping[str, Any]) -> Hardware:
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator in ("auto", "cuda"):
        accelerator = "gpu" if accelerator == "cuda" or torch.cuda.is_available() else "cpu"
    if accelerator not in ("cpu", "gpu"):
        raise InputError(f"python -m lit_dpo.plan knows CPUs and GPUs, not --trainer.accelerator={accelerator}")
    devices = _device_count(trainer.get("devices", "auto"), accelerator)
    nodes = int(trainer.get("num_nodes") or 1)
    strategy, hsdp = _strategy(trainer.get("strategy", "auto"), devices * nodes)
    return Hardware(accelerator, devices, nodes, strategy, hsdp)


def _device_count(devices: Any, accelerator: str) -> int:
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if str(devices) == "auto":
        if accelerator == "gpu" and not torch.cuda.is_available():
            raise InputError("--trainer.devices=auto on GPUs, and this machine has none: give --trainer.devices=N")
        return torch.cuda.device_count() if accelerator == "gpu" else 1
    if str(devices) == "-1":
        return torch.cuda.device_count() if accelerator == "gpu" else 1
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    return int(devices)


def _strategy(strategy: Any, world_size: int) -> tuple[Strategy, bool]:
    """``fsdp`` for lit_dpo's FSDPStrategy or Lightning's ModelParallelStrategy, ``ddp`` for any DDP."""
    if isinstance(strategy, Mapping):  # a class_path and its init_args (``--trainer.strategy=lit_dpo.parallel...``)
        class_path, init = str(strategy.get("class_path", "")), strategy.get("init_args") or {}
        if class_path.endswith(("FSDPStrategy", "ModelParallelStrategy")):
            return "fsdp", bool(init.get("hsdp", False))
        return ("ddp" if "DDP" in class_path else "single"), False
    name = str(strategy)
    if name.startswith("ddp") or (name == "auto" and world_size > 1):
        return "ddp", False
    if name in ("auto", "single_device"):
        return "single", False
    raise InputError(f"python -m lit_dpo.plan plans one device, DDP and lit_dpo's FSDP2 (--config "
                     f"recipes/strategy/fsdp.yaml), not --trainer.strategy={name}")  # fmt: skip


@dataclass(frozen=True)
class Lengths:
    """The pair the plan sizes the step for: the longest the options allow, unless told."""

    prompt: int
    completion: int


def lengths(data: Mapping[str, Any], prompt: Optional[int], completion: Optional[int]) -> Lengths:
    max_length, max_prompt = data.get("max_length"), data.get("max_prompt_length")
    if prompt is None:
        prompt = max_prompt if max_prompt is not None else (max_length // 2 if max_length else None)
    if completion is None and max_length is not None and prompt is not None:
        completion = max(1, max_length - prompt)
    if prompt is None or completion is None:
        raise InputError("--data.max_length=null: give the pairs' lengths with --prompt_tokens and --completion_tokens")
    return Lengths(prompt, completion)


def build_setup(
    model: Mapping[str, Any],
    data: Mapping[str, Any],
    trainer: Mapping[str, Any],
    objective: Objective,
    pair: Lengths,
    online: bool = False,
) -> tuple[Setup, Hardware]:
    """The ``Setup`` of a fit with these options (the model's config is read; its weights are not)."""
    if model.get("quantization"):
        raise InputError("python -m lit_dpo.plan does not plan --model.quantization=nf4 yet (4-bit bases)")
    hw = hardware(trainer)
    config = load_config(model["model_name_or_path"], model.get("trust_remote_code", False))
    param_dtype, autocast = _precision(str(trainer.get("precision") or "32-true"), model.get("dtype", "float32"))
    lora_r = model.get("lora_r") or 0
    shape = model_shape(config, lora_r or LORA_R_SUGGESTED, model.get("lora_target_modules", "all-linear"),
                        model.get("trust_remote_code", False))  # fmt: skip
    shared = bool(data.get("prefix_sharing", True))
    lean = lean_blocks_apply(hw.world_size, bool(model.get("compile")))
    layer, outside = layer_activations(config, param_dtype, autocast, model.get("attn_implementation"), shared,
                                       model.get("trust_remote_code", False), lean, bool(lora_r))  # fmt: skip
    steps_like = SimpleNamespace(
        world_size=hw.world_size, accumulate_grad_batches=int(trainer.get("accumulate_grad_batches") or 1),
        gradient_clip_val=trainer.get("gradient_clip_val"), precision=str(trainer.get("precision") or "32-true"),
    )  # fmt: skip
    chunk = (GPU_CHUNK_ELEMENTS if hw.accelerator == "gpu" else CHUNK_ELEMENTS) // shape.vocab_size
    batch_size = int(data.get("batch_size") or 4)
    setup = Setup(
        shape=shape,
        layer=layer,
        outside=outside,
        batch_size=batch_size,
        pass_batch_size=int(data.get("val_batch_size") or 2 * batch_size),  # PreferenceDataModule's default
        prompt_tokens=pair.prompt,
        completion_tokens=pair.completion,
        shared_prefix=shared,
        pack_length=int(data.get("pack_length") or 0),
        param_bytes=param_dtype.itemsize,
        strategy=hw.strategy,
        world_size=hw.world_size,
        shard_size=hw.shard_size,
        reference=reference_kind(model, objective, trainer, online),
        lora=bool(lora_r),
        activation_checkpointing=bool(model.get("activation_checkpointing")),
        optimizer_in_backward=optim.in_backward(steps_like, model.get("optimizer_in_backward")),
        chunk_positions=chunk if shape.chunked_head else None,  # (and the scored positions are many: see Setup)
        half_logits=param_dtype.itemsize == 2 or autocast is not None,
        shares_weights_file=_shares_weights_file(model, config, hw, param_dtype),
    )
    return setup, hw


def _shares_weights_file(model: Mapping[str, Any], config: Any, hw: Hardware, param_dtype: torch.dtype) -> bool:
    """Whether the reference is the policy's own checkpoint, loaded as stored into one CPU process: transformers
    maps the safetensors file, so both models' weights are the same pages until the policy's first update (a
    GPU, a conversion to another dtype or a sharding strategy copies them)."""
    own = model.get("ref_model_name_or_path") in (None, model["model_name_or_path"])
    return hw.accelerator == "cpu" and hw.strategy == "single" and own and getattr(config, "dtype", None) == param_dtype


def _precision(precision: str, dtype: str) -> tuple[torch.dtype, Optional[torch.dtype]]:
    """The weights' dtype and the autocast dtype (None: no autocast) of ``--trainer.precision`` and ``--model.dtype``."""
    half = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    if precision.endswith("-true") and not precision.startswith("32"):
        return half, None  # Lightning converts the model
    if precision.endswith("-mixed"):
        return getattr(torch, dtype), half
    return getattr(torch, dtype), None


def reference_kind(
    model: Mapping[str, Any], objective: Objective, trainer: Mapping[str, Any], online: bool
) -> ReferenceKind:
    """Where the reference's log-probs come from, as ``lit_dpo.models.build_models`` and ``should_cache`` decide;
    when caching would depend on the data's size (``--trainer.max_steps`` set), the live reference."""
    if not objective.needs_reference:
        return "none"
    separate = model.get("ref_model_name_or_path") is not None or not model.get("lora_r")
    wanted = model.get("precompute_ref_log_probs")
    moves = bool(model.get("ref_sync_steps") or model.get("ref_sync_epochs")) or online
    if wanted or (wanted is None and separate and not moves and not objective.unpaired and _whole_epochs(trainer)):
        return "cached"
    return "live" if separate else "adapter"


def _whole_epochs(trainer: Mapping[str, Any]) -> bool:
    max_steps, limit = trainer.get("max_steps"), trainer.get("limit_train_batches")
    return (max_steps is None or int(max_steps) < 0) and limit in (None, 1.0, 1)
