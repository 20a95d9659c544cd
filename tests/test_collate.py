import torch
from conftest import make_model

from lit_dpo.collate import PaddedCollator, SharedPrefixCollator
from lit_dpo.logps import completion_logps, sequence_logps

EXAMPLES = [
    {"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]},
    {"prompt_ids": [7, 8], "chosen_ids": [9], "rejected_ids": [10, 11]},
]


def test_padded_collator_by_hand():
    batch = PaddedCollator(pad_token_id=0)(EXAMPLES)
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, 4, 5],  # prompt + chosen
        [7, 8, 9, 0, 0],  # prompt + chosen + padding
        [1, 2, 3, 6, 0],  # prompt + rejected + padding
        [7, 8, 10, 11, 0],  # prompt + rejected + padding
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]
    x = -100
    assert batch["labels"].tolist() == [[x, x, x, 4, 5], [x, x, 9, x, x], [x, x, x, 6, x], [x, x, 10, 11, x]]
    # flat positions (row * 5 + t) whose hidden state predicts each completion token
    assert batch["score_index"].tolist() == [2, 3, 6, 12, 16, 17]
    assert batch["score_target"].tolist() == [4, 5, 9, 6, 10, 11]
    assert batch["score_seq"].tolist() == [0, 0, 1, 2, 3, 3]
    assert batch["num_pairs"] == 2


def test_shared_prefix_collator_by_hand():
    batch = SharedPrefixCollator(pad_token_id=0)(EXAMPLES)
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, 4, 5, 6],  # prompt, chosen, rejected
        [7, 8, 9, 10, 11, 0],  # prompt, chosen, rejected, padding
    ]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3], [0, 1, 2, 2, 3, 0]]
    # pair by pair: chosen 4 <- 3 (pos 2), 5 <- 4 (pos 3); rejected 6 <- the last prompt token 3 (pos 2), not 5;
    # row 2 starts at flat index 6: chosen 9 <- 8 (pos 1); rejected 10 <- 8 (pos 1), 11 <- 10 (pos 3)
    assert batch["score_index"].tolist() == [2, 3, 2, 6 + 1, 6 + 1, 6 + 3]
    assert batch["score_target"].tolist() == [4, 5, 6, 9, 10, 11]
    assert batch["score_seq"].tolist() == [0, 0, 2, 1, 3, 3]
    assert batch["attention_mask"].shape == (2, 1, 6, 6)
    assert batch["attention_mask"][1, 0].int().tolist() == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],  # chosen 9 sees the prompt
        [1, 1, 0, 1, 0, 0],  # rejected 10 sees the prompt, not chosen 9
        [1, 1, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees only itself
    ]


def _logps(model, batch):
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    hidden = model.model(**inputs).last_hidden_state.flatten(0, 1)[batch["score_index"]]
    return completion_logps(model.lm_head(hidden), batch["score_target"], batch["score_seq"], 2 * batch["num_pairs"])


def test_both_layouts_give_the_logps_of_the_plain_forward():
    model = make_model(vocab_size=32, seed=0).eval()
    examples = EXAMPLES + [{"prompt_ids": [3, 1, 4, 1, 5], "chosen_ids": [9, 2, 6, 5, 3], "rejected_ids": [5]}]
    padded = PaddedCollator(pad_token_id=0)(examples)
    with torch.no_grad():
        reference = sequence_logps(
            model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits, padded["labels"]
        )
        collators = [PaddedCollator(0), SharedPrefixCollator(0), SharedPrefixCollator(0, pad_to_multiple_of=8)]
        collators += [SharedPrefixCollator(0, pack_length=n) for n in (1, 12, 30, 1000)]
        for collator in collators:
            sums, counts = _logps(model, collator(examples))
            torch.testing.assert_close(sums, reference, rtol=1e-5, atol=1e-5)
            assert counts.tolist() == [2, 1, 5, 1, 2, 1]


def test_packing_balances_rows_and_keeps_pairs_apart():
    batch = SharedPrefixCollator(pad_token_id=0, pack_length=100)(EXAMPLES)  # 6 + 5 tokens: one row
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 0, 1, 2, 2, 3]]
    mask = batch["attention_mask"][0, 0]
    assert not mask[6:, :6].any() and not mask[:6, 6:].any()  # block-diagonal: pairs never see each other
    assert batch["score_index"].tolist() == [2, 3, 2, 7, 7, 9]
    assert SharedPrefixCollator(0, pack_length=6)(EXAMPLES)["input_ids"].shape == (2, 6)  # 11 tokens: 2 rows
