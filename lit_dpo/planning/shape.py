"""What a model weighs, read from its config alone: parameter counts on the meta device (nothing downloaded but
``config.json``), and the activations one decoder layer keeps for the backward, measured by tracing.

The trace runs the model's own forward (transformers' code: its masks, rotary embeddings, attention) with one and
with two decoder layers on the CPU, on uninitialised weights and a small vocabulary, and adds up the tensors
autograd saves (``saved_tensors_hooks``), parameters left out; the second layer's share is what every layer keeps.
Three lengths give the per-token and the quadratic (attention) terms.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from lit_dpo.errors import InputError
from lit_dpo.hf import _loading, is_vision_config, resolve
from lit_dpo.parallel import decoder_layers
from lit_dpo.scoring.lean import use_lean_blocks
from lit_dpo.scoring.lm_head import PLAIN_HEAD_MODELS

TRACE_LENGTHS = (32, 64, 128)  # one row of each length: enough to tell constant, linear and quadratic terms
TRACE_VOCAB = 128  # the layers' activations do not depend on the vocabulary; the trace's embedding stays small


@dataclass(frozen=True)
class LayerActivations:
    """Bytes one decoder layer keeps for the backward, for rows of ``length`` tokens: ``constant`` (e.g. the
    low-precision weight copies autocast keeps) + ``per_token`` * tokens + ``per_token_squared`` * row length * tokens
    (attention probabilities, when the attention keeps them)."""

    constant: float
    per_token: float
    per_token_squared: float

    def bytes(self, rows: int, length: int) -> float:
        tokens = rows * length
        return self.constant + self.per_token * tokens + self.per_token_squared * length * tokens


@dataclass(frozen=True)
class ModelShape:
    """Parameter counts and sizes of a causal LM (``model_shape``)."""

    architecture: str  # e.g. LlamaForCausalLM
    params: int  # every parameter once (a tied embedding and head count once)
    layer_params: int  # one decoder layer
    num_layers: int
    hidden_size: int
    vocab_size: int
    largest_tensor: int  # elements of the largest parameter (the embedding, usually)
    lora_params: int  # trainable parameters with the LoRA settings asked for (0: no LoRA)

    @property
    def root_params(self) -> int:
        """Parameters outside the decoder layers: embeddings, final norm, LM head (FSDP's root unit)."""
        return self.params - self.num_layers * self.layer_params

    @property
    def chunked_head(self) -> bool:
        """Whether lit_dpo computes this model's scored logits in chunks (``lit_dpo.scoring.lm_head``)."""
        return self.architecture in PLAIN_HEAD_MODELS


def load_config(name_or_path: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """The model's config: a Hub id, a local folder (``config.json`` is enough) or the bundled model."""
    with _loading(name_or_path):
        config = AutoConfig.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)
    if is_vision_config(config):
        raise InputError(f"python -m lit_dpo.plan does not plan vision-language models ({config.model_type}) yet")
    return config


def model_shape(
    config: PretrainedConfig,
    lora_r: int = 0,
    lora_targets: str | list[str] = "all-linear",
    trust_remote_code: bool = False,
) -> ModelShape:
    """Counts from the model built on the meta device (no memory, nothing downloaded)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    layers = decoder_layers(model)
    counts = {
        "architecture": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()),  # parameters() yields a tied weight once
        "layer_params": sum(p.numel() for p in layers[0].parameters()),
        "num_layers": len(layers),
        "hidden_size": config.get_text_config().hidden_size,
        "vocab_size": config.get_text_config().vocab_size,
        "largest_tensor": max(p.numel() for p in model.parameters()),
    }
    lora_params = _lora_params(model, lora_r, lora_targets) if lora_r else 0  # adds adapters to the meta model
    return ModelShape(**counts, lora_params=lora_params)


def _lora_params(model: torch.nn.Module, r: int, targets: str | list[str]) -> int:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, target_modules=targets, task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # PEFT asks transformers a deprecated question (is_gradient_checkpointing)
        warnings.simplefilter("ignore", FutureWarning)
        adapted = get_peft_model(model, config)
    return sum(p.numel() for p in adapted.parameters() if p.requires_grad)


def layer_activations(
    config: PretrainedConfig,
    dtype: torch.dtype,
    autocast: Optional[torch.dtype] = None,
    attn_implementation: Optional[str] = None,
    shared_prefix: bool = True,
    trust_remote_code: bool = False,
    lean: bool = False,
    lora: bool = False,
) -> tuple[LayerActivations, LayerActivations]:
    """What one decoder layer saves for the backward, and what the rest of the forward saves (embeddings, final
    norm), traced (see the module's docstring). ``shared_prefix`` passes a 4D boolean mask and position ids, as
    lit_dpo's prefix-shared rows do; else a padding mask. ``lean``: with ``lit_dpo.scoring.lean``'s blocks, as a
    fit in one process has them (its norms only under ``lora``: LoRA's projections keep autograd's MLP)."""
    traced = {}
    for layers in (1, 2):
        model = _truncated(config, layers, dtype, attn_implementation, trust_remote_code)
        if lean:
            use_lean_blocks(model, mlps=not lora)
        traced[layers] = [_saved(model, length, autocast, shared_prefix) for length in TRACE_LENGTHS]
        del model
    layer = [two - one for one, two in zip(traced[1], traced[2])]
    outside = [one - each for one, each in zip(traced[1], layer)]
    return _fit(layer), _fit(outside)


def _fit(saved: list[int]) -> LayerActivations:
    """The constant, linear and quadratic terms through the bytes saved at the ``TRACE_LENGTHS``."""
    lengths = torch.tensor(TRACE_LENGTHS, dtype=torch.float64)
    design = torch.stack([torch.ones_like(lengths), lengths, lengths**2], dim=1)
    terms = torch.linalg.solve(design, torch.tensor(saved, dtype=torch.float64)).tolist()
    return LayerActivations(*(round(max(term, 0.0), 3) + 0.0 for term in terms))  # rounding: the solve's noise


def _truncated(
    config: PretrainedConfig,
    num_layers: int,
    dtype: torch.dtype,
    attn_implementation: Optional[str],
    trust_remote_code: bool,
) -> torch.nn.Module:
    """The model with ``num_layers`` decoder layers and a tiny vocabulary, on the CPU, weights uninitialised
    (the sizes of what is saved do not depend on the values)."""
    traced = config.__class__.from_dict(config.to_dict())
    text = traced.get_text_config()
    text.num_hidden_layers, text.vocab_size = num_layers, TRACE_VOCAB
    text.use_cache = False
    if isinstance(getattr(text, "layer_types", None), list):  # per-layer kinds (sliding/full) follow the count
        text.layer_types = text.layer_types[:num_layers]
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(traced, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
    return model.to_empty(device="cpu").train()


def _saved(model: torch.nn.Module, length: int, autocast: Optional[torch.dtype], shared_prefix: bool) -> int:
    """Bytes of the distinct non-parameter storages autograd saves in one forward of a row of ``length``."""
    inputs = _inputs(length, shared_prefix)
    weights = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in weights:
            saved[storage._cdata] = storage.nbytes()
        return tensor

    embeddings = model.get_input_embeddings()(inputs.pop("input_ids")).detach().requires_grad_()
    amp = torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with amp, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.base_model(inputs_embeds=embeddings, use_cache=False, **inputs)
    return sum(saved.values())


def _inputs(length: int, shared_prefix: bool) -> dict[str, torch.Tensor]:
    ids = torch.zeros(1, length, dtype=torch.long)
    if not shared_prefix:
        return {"input_ids": ids, "attention_mask": torch.ones(1, length, dtype=torch.long)}
    causal = torch.ones(length, length, dtype=torch.bool).tril()[None, None]  # (1, 1, L, L)
    return {"input_ids": ids, "attention_mask": causal, "position_ids": torch.arange(length)[None]}
