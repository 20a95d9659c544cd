"""lit_dpo/planning/shape.py: counts from the meta device equal the real model's; the traced activations add up
to what a real forward saves."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lit_dpo.planning.shape import layer_activations, model_shape

CONFIG = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip


def saved_bytes(model: torch.nn.Module, **inputs) -> int:
    weights = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage._cdata not in weights:
            saved[storage._cdata] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(**inputs, use_cache=False)
    return sum(saved.values())


def test_counts_are_the_real_models():
    config = LlamaConfig(**CONFIG)
    shape = model_shape(config, lora_r=4, lora_targets=["q_proj", "v_proj"])
    real = LlamaForCausalLM(config)
    assert shape.params == sum(p.numel() for p in real.parameters())
    assert shape.layer_params == sum(p.numel() for p in real.model.layers[0].parameters())
    assert shape.root_params == 300 * 64 + 64  # tied embedding and head, final norm
    assert shape.num_layers == 3 and shape.largest_tensor == 300 * 64
    assert shape.lora_params == 3 * 2 * 4 * (64 + 64) - 3 * 4 * (64 - 32)  # v_proj's output: 2 heads of 16


def test_traced_activations_add_up_to_a_real_forward():
    config = LlamaConfig(**CONFIG, attn_implementation="sdpa")
    for shared in (True, False):
        layer, outside = layer_activations(config, torch.float32, shared_prefix=shared)
        model = LlamaForCausalLM(config).train()
        rows, length = 3, 40  # neither the trace's one row nor its lengths
        ids = torch.randint(0, 300, (rows, length))
        if shared:
            mask = torch.ones(length, length, dtype=torch.bool).tril()[None, None].expand(rows, 1, -1, -1)
            inputs = {"attention_mask": mask, "position_ids": torch.arange(length)[None].expand(rows, -1)}
        else:
            inputs = {"attention_mask": torch.ones(rows, length, dtype=torch.long)}
        real = saved_bytes(model, input_ids=ids, **inputs)
        planned = 3 * layer.bytes(rows, length) + outside.bytes(rows, length)
        assert abs(planned - real) <= 0.02 * real, (shared, planned, real)
