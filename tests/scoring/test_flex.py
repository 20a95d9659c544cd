"""The FlexAttention path of prefix sharing (``lit_dpo.scoring.flex``): the block mask is the dense mask, element by
element, and packed rows scored with it match the padded layout."""

import torch
from torch.nn.attention.flex_attention import create_mask

from lit_dpo.scoring.flex import block_mask
from lit_dpo.scoring.forward import score_sequences


def test_the_block_mask_is_the_dense_mask(make_batch, standard_rows):
    for layout in ("shared", "packed"):
        batch = make_batch(standard_rows(7), layout)
        rows, width = batch.input_ids.shape
        blocks = block_mask(batch.segments)
        dense = create_mask(blocks.mask_mod, rows, 1, width, width, device="cpu")
        assert torch.equal(dense, batch.attention_mask), layout
        assert (batch.segments == -1).any()  # padding is covered too


def test_packed_rows_under_flex_attention_score_as_padded_rows(dpo_module, tiny_model_dir, make_batch, standard_rows):
    module = dpo_module(model_name_or_path=tiny_model_dir, attn_implementation="flex_attention")
    assert module.policy.config._attn_implementation == "flex_attention"
    rows = standard_rows(6)
    with torch.no_grad():
        got = score_sequences(module.policy, make_batch(rows, "packed"))
        module.policy.set_attn_implementation("sdpa")
        want = score_sequences(module.policy, make_batch(rows, "padded"))
    for g, w in zip(got[:3], want[:3]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
