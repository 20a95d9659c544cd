"""LoRA through PEFT: adapters on the policy, the base with adapters disabled as the reference, merged export.

With adapters, DPO keeps one copy of the weights: the reference is the same base model run with the adapters
switched off (``PeftModel.disable_adapter``), so it costs no memory and stays exactly the starting policy.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Union

import torch
from torch import Tensor
from transformers import PreTrainedModel

if TYPE_CHECKING:  # PEFT is imported when adapters are added: importing it (and bitsandbytes with it) costs every
    from peft import PeftModel  # start about 1.4 s, which runs without adapters need not pay

ADAPTER = "default"
_PREFIX = "base_model.model."


def add_adapters(
    model: PreTrainedModel, r: int, alpha: int, dropout: float, target_modules: Union[str, list[str]]
) -> PeftModel:
    """Wrap ``model`` with trainable rank-``r`` adapters; every base weight is frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)


def is_lora(model: torch.nn.Module) -> bool:
    peft = sys.modules.get("peft")  # a model can only be a PeftModel once PEFT has been imported
    return peft is not None and isinstance(model, peft.PeftModel)


def scaling(model: PeftModel) -> float:
    config = model.peft_config[ADAPTER]
    return config.lora_alpha / config.r


def merged_state_dict(state: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """The plain HF state dict of a LoRA model's full state dict: ``W + scale * B @ A`` under the base names.

    Works on a gathered FSDP state dict as well as on a local one (PEFT's ``merge_and_unload`` needs the
    unsharded modules).
    """
    merged = {}
    for key, value in state.items():
        if f".lora_A.{ADAPTER}." in key or f".lora_B.{ADAPTER}." in key:
            continue
        name = key.removeprefix(_PREFIX).replace(".base_layer.", ".")
        if ".base_layer.weight" in key:
            layer = key.removesuffix(".base_layer.weight")
            down, up = state[f"{layer}.lora_A.{ADAPTER}.weight"], state[f"{layer}.lora_B.{ADAPTER}.weight"]
            value = value + (scale * (up.float() @ down.float())).to(value.dtype)  # (out, r) @ (r, in)
        merged[name] = value
    return merged
