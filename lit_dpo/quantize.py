"""QLoRA: the frozen base in 4-bit NF4 (bitsandbytes, through transformers' ``BitsAndBytesConfig``) under trainable
LoRA adapters, so a model about 4x larger fits the same memory. The reference is the quantized base with the adapters
disabled; a checkpoint holds the adapters only (the base is reloaded from its path, and the reference fingerprint
checks it is the same on resume); the export merges the adapters into the full-precision base.

bitsandbytes rather than torchao's NF4: transformers and PEFT load, train and disable adapters on bitsandbytes'
``Linear4bit`` directly, and it runs on CPUs (this is how it is tested) as well as GPUs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch

from lit_dpo import lora
from lit_dpo.errors import InputError

if TYPE_CHECKING:
    from peft import PeftModel

QUANTIZATIONS = ("nf4",)


def check(quantization: Optional[str], lora_r: int) -> None:
    """Refuse quantization settings that cannot work, before anything loads."""
    if quantization is None:
        return
    if quantization not in QUANTIZATIONS:
        raise InputError(f"--model.quantization={quantization}: lit_dpo knows {', '.join(QUANTIZATIONS)}")
    if not lora_r:
        raise InputError("--model.quantization=nf4 trains LoRA adapters on a frozen 4-bit base: set --model.lora_r "
                         "(e.g. 16)")  # fmt: skip


def load_options(quantization: Optional[str], dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments that load the base quantized, straight onto ``device``."""
    if quantization is None:
        return {}
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
    )
    place = device.index if device.type == "cuda" and device.index is not None else device.type
    return {"quantization_config": config, "device_map": {"": place}}  # a 4-bit model cannot be moved after loading


def keep_differentiable(model: torch.nn.Module) -> None:
    """Keep every 4-bit weight in the layout that has a backward. bitsandbytes repacks a weight for its fast CPU
    inference kernel the first time its layer runs in eval mode without gradient (a validation, a generation) on a
    CPU with AVX512-BF16, for good; that kernel has no backward, so every later training step would silently lose
    the gradient through the base layers (measured: LoRA gradients off by up to 65 on a tiny model)."""
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


@torch.no_grad()
def release_weights_file(model: torch.nn.Module) -> None:
    """Copy the tensors left in full precision (embeddings, norms) out of the memory-mapped weights file, so that the
    mapping closes: otherwise every page quantization read stays resident (measured: 505 MiB for SmolLM2-135M, more
    than the 4-bit weights save). On a GPU they are already copies."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.dtype.is_floating_point and tensor.device.type == "cpu":
            tensor.data = tensor.data.clone()


def is_quantized(model: torch.nn.Module) -> bool:
    from bitsandbytes.nn import Linear4bit

    return any(isinstance(module, Linear4bit) for module in model.modules())


def checkpoint_adapters_only(policy: PeftModel) -> None:
    """Make ``policy.state_dict()`` hold what trains (the adapters) and nothing of the frozen 4-bit base: its packed
    weights would not load back into a fresh 4-bit model, and the base is reloaded from its path anyway."""
    trainable = {name for name, param in policy.named_parameters() if param.requires_grad}

    def keep_trainable(module: torch.nn.Module, state: dict[str, Any], prefix: str, metadata: Any) -> None:
        for key in [k for k in state if k.removeprefix(prefix) not in trainable]:
            del state[key]

    policy.register_state_dict_post_hook(keep_trainable)


def unquantized(policy: PeftModel, base: torch.nn.Module) -> PeftModel:
    """``base`` (the full-precision model the 4-bit one was loaded from) with ``policy``'s adapters: what the
    export merges."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    config = policy.peft_config[lora.ADAPTER]
    full = lora.add_adapters(base, config.r, config.lora_alpha, config.lora_dropout, sorted(config.target_modules))
    set_peft_model_state_dict(full, get_peft_model_state_dict(policy))
    return full
