"""lit_dpo/planning/estimate.py: the parts' arithmetic by hand, and rows laid out as the collators lay them out."""

from dataclasses import replace

import pytest

from lit_dpo.data import PaddedCollator, Pair, SharedPrefixCollator
from lit_dpo.planning.estimate import Setup, estimate, layout, variants
from lit_dpo.planning.shape import LayerActivations, ModelShape

# 1,000 parameters: 2 layers of 300, a root (embedding, norm, head) of 400; LoRA would train 50
SHAPE = ModelShape("LlamaForCausalLM", params=1000, layer_params=300, num_layers=2, hidden_size=8, vocab_size=100,
                   largest_tensor=200, lora_params=50)  # fmt: skip
LAYER = LayerActivations(constant=0.0, per_token=100.0, per_token_squared=0.0)
OUTSIDE = LayerActivations(constant=0.0, per_token=1.0, per_token_squared=0.0)


def setup(**changes) -> Setup:
    base = Setup(shape=SHAPE, layer=LAYER, outside=OUTSIDE, batch_size=2, prompt_tokens=3, completion_tokens=2,
                 shared_prefix=False, pack_length=0, param_bytes=4)  # fmt: skip
    return replace(base, **changes)


@pytest.mark.parametrize("batch_size", [1, 3, 4])
@pytest.mark.parametrize("pack_length", [0, 1, 12, 30, 1000])
def test_layout_is_the_collators(batch_size, pack_length):
    # prompt 3, completions 2; prompts that start apart (the plan counts no shared start: an upper bound)
    pairs = [Pair([10 + i, 2, 3], [4, 5], [6, 7]) for i in range(batch_size)]
    for shared, collator in ((False, PaddedCollator(0)), (True, SharedPrefixCollator(0, pack_length=pack_length))):
        rows = layout(batch_size, 3, 2, shared, pack_length)
        batch = collator(pairs)
        assert (rows.rows, rows.length) == tuple(batch.input_ids.shape)
        assert rows.scored == batch.completions.index.numel()


def test_one_process_by_hand():
    plan = estimate(setup())  # padded: 4 rows of 5 tokens, 8 scored; fp32
    assert plan.weights == 4000 and plan.gradients == 4000 and plan.optimizer == 8000
    assert plan.reference == 4000  # live: a second model
    assert plan.activations == 2 * 100 * 20 + 1 * 20  # two layers and the rest, 20 tokens
    # the reference's forward (one layer's worth and the head's peak: 8 x 100 logits and a temporary, fp32) after
    # the policy's, which keeps its activations and fp32 logits
    assert plan.logits == 8 * 100 * 4 + 100 * 20 + 2 * 8 * 100 * 4
    assert plan.strategy == 0 and plan.reference_pass == 0
    assert plan.peak == 4000 + 8000 + 4000 + 4020 + 11600 + 4000  # the previous step's gradients: until the backward
    assert estimate(setup(optimizer_in_backward=True)).peak == 4000 + 8000 + 4000 + 4020 + 11600
    cached = estimate(setup(reference="cached"))
    assert cached.logits == 2 * 8 * 100 * 4  # the logits and their gradient (or logsumexp's temporary)
    assert estimate(setup(reference="cached", half_logits=True)).logits == 8 * 100 * (2 + 4 + 4)  # and the output


def test_strategies_and_options_by_hand():
    fsdp = estimate(setup(strategy="fsdp", world_size=4, shard_size=4))
    assert fsdp.weights == 1000 and fsdp.optimizer == 2000 and fsdp.reference == 1000
    assert fsdp.strategy == (400 * 3 / 4 + 2 * 300) * 4  # the gathered root and two layers
    ddp = estimate(setup(strategy="ddp", world_size=4))
    assert ddp.weights == 4000 and ddp.strategy == 4000  # gradient buckets
    assert estimate(setup(optimizer_in_backward=True)).gradients == 200 * 4  # one tensor at a time
    lora = estimate(setup(lora=True, reference="adapter"))
    assert lora.weights == 1050 * 4 and lora.gradients == 200 and lora.optimizer == 400 and lora.reference == 0
    cached = estimate(setup(reference="cached"))
    assert cached.reference == 0 and cached.reference_pass == 2 * 4000 + 100 * 20 + 2 * 8 * 100 * 4
    # the pass scores batches of the validation batch size (4 pairs: 8 rows of 5 tokens, 16 scored), with AdamW's
    # moments already allocated when the optimizer steps in the backward
    bigger = estimate(setup(reference="cached", pass_batch_size=4, optimizer_in_backward=True))
    assert bigger.reference_pass == 2 * 4000 + 8000 + 100 * 40 + 2 * 16 * 100 * 4
    checkpointed = estimate(setup(activation_checkpointing=True))
    assert checkpointed.activations == 2 * 20 * 8 * 4 + 100 * 20 + 20  # each layer's input, one layer, the rest
    chunked = estimate(setup(chunk_positions=1))  # 8 scored positions > 4 chunks: chunks of one position
    assert chunked.logits == 100 * 20 + 2 * 1 * 100 * 4  # the policy keeps no logits: hidden states


def test_variants_mark_the_current_choice_and_lower_the_peak():
    found = variants(setup(strategy="ddp", world_size=2))
    assert sum(v.current for v in found) == 4  # activations, reference, rows, strategy: one each; batch never
    by_label = {v.label: v for v in found}
    assert by_label["activation checkpointing on"].plan.peak < by_label["activation checkpointing off"].plan.peak
    assert by_label["FSDP2"].plan.weights == 2000 and by_label["DDP"].current
    assert by_label["LoRA (the base is the reference)"].option == "--model.lora_r=16"
