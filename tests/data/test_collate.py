"""lit_dpo/data/collate.py: both layouts, by hand, and equal to the plain forward's log-probs."""

import random

import torch

from lit_dpo.data import PaddedCollator, Pair, SharedPrefixCollator, UnpairedExample
from lit_dpo.data.packing import pack_rows, row_width
from lit_dpo.scoring import score_sequences

EXAMPLES = [Pair([1, 2, 3], [4, 5], [6]), Pair([7, 8], [9], [10, 11])]


def test_padded_collator_by_hand(padded_labels):
    batch = PaddedCollator(pad_token_id=0)(EXAMPLES)
    assert batch.input_ids.tolist() == [
        [1, 2, 3, 4, 5],  # prompt + chosen
        [7, 8, 9, 0, 0],  # prompt + chosen + padding
        [1, 2, 3, 6, 0],  # prompt + rejected + padding
        [7, 8, 10, 11, 0],  # prompt + rejected + padding
    ]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]
    x = -100
    assert padded_labels(batch).tolist() == [[x, x, x, 4, 5], [x, x, 9, x, x], [x, x, x, 6, x], [x, x, 10, 11, x]]
    # flat positions (row * 5 + t) whose hidden state predicts each completion token
    assert batch.completions.index.tolist() == [2, 3, 6, 12, 16, 17]
    assert batch.completions.target.tolist() == [4, 5, 9, 6, 10, 11]
    assert batch.completions.seq.tolist() == [0, 0, 1, 2, 3, 3]
    assert batch.num_pairs == 2 and batch.position_ids is None and not batch.unpaired


def test_shared_prefix_collator_by_hand():
    batch = SharedPrefixCollator(pad_token_id=0)(EXAMPLES)
    assert batch.input_ids.tolist() == [
        [1, 2, 3, 4, 5, 6],  # prompt, chosen, rejected
        [7, 8, 9, 10, 11, 0],  # prompt, chosen, rejected, padding
    ]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 3], [0, 1, 2, 2, 3, 0]]
    # pair by pair: chosen 4 <- 3 (pos 2), 5 <- 4 (pos 3); rejected 6 <- the last prompt token 3 (pos 2), not 5;
    # row 2 starts at flat index 6: chosen 9 <- 8 (pos 1); rejected 10 <- 8 (pos 1), 11 <- 10 (pos 3)
    assert batch.completions.index.tolist() == [2, 3, 2, 6 + 1, 6 + 1, 6 + 3]
    assert batch.completions.target.tolist() == [4, 5, 6, 9, 10, 11]
    assert batch.completions.seq.tolist() == [0, 0, 2, 1, 3, 3]
    # the prompts' own tokens but the first: 2 <- 1, 3 <- 2 (pair 0); 8 <- 7 (pair 1, from flat index 6)
    assert batch.prompts.index.tolist() == [0, 1, 6] and batch.prompts.target.tolist() == [2, 3, 8]
    assert batch.attention_mask.shape == (2, 1, 6, 6)
    assert batch.attention_mask[1, 0].int().tolist() == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],  # chosen 9 sees the prompt
        [1, 1, 0, 1, 0, 0],  # rejected 10 sees the prompt, not chosen 9
        [1, 1, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees only itself
    ]


def test_a_packed_row_computes_its_prompts_common_start_once():
    examples = [Pair([1, 2, 3], [4, 5], [6]), Pair([1, 2, 7], [8], [9]), Pair([1, 2], [10], [11])]
    batch = SharedPrefixCollator(pad_token_id=0, pack_length=100)(examples)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]  # [1, 2] once, then each example
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 2, 3, 3, 2, 2]]  # as in each example's own row
    assert batch.segments.tolist() == [[-8, -8, 0, 1, 1, 2, 4, 5, 6, 9, 10]]  # the start: example SHARED (-2)
    # 4 <- 3, 5 <- 4, 6 <- 3; 8 <- 7, 9 <- 7; 10 <- 2 and 11 <- 2: the third prompt is the shared start itself
    assert batch.completions.index.tolist() == [2, 3, 2, 6, 6, 1, 1]
    assert batch.completions.seq.tolist() == [0, 0, 3, 1, 4, 2, 5]
    assert batch.prompts.index.tolist() == [0, 1, 0, 1, 0] and batch.prompts.target.tolist() == [2, 3, 2, 7, 2]
    assert batch.positions == 11 and batch.tokens == 15
    assert batch.attention_mask[0, 0].int().tolist() == [
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # example 0's own prompt token 3 sees the shared start
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0],  # rejected 6: the start and its prompt, not chosen 4, 5
        [1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0],  # example 1 sees the start, not example 0
        [1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0],  # example 2: only the start is its prompt
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    ]
    alone = SharedPrefixCollator(pad_token_id=0)(examples)  # one example a row: nothing shared
    assert alone.input_ids.shape == (3, 6) and (alone.segments >= -1).all()


def test_unpaired_examples_put_a_mismatched_completion_second():
    examples = [UnpairedExample([1, 2], [3], desirable=True), UnpairedExample([4], [5, 6], desirable=False)]
    batch = PaddedCollator(pad_token_id=0, max_length=3)(examples)
    assert batch.input_ids.tolist() == [
        [1, 2, 3],  # prompt 0 + its completion
        [4, 5, 6],  # prompt 1 + its completion
        [1, 2, 5],  # prompt 0 + example 1's completion, cut to max_length 3
        [4, 3, 0],  # prompt 1 + example 0's completion (the previous one in the batch)
    ]
    assert batch.desirable.tolist() == [True, False] and batch.unpaired


def test_both_layouts_give_the_logps_of_the_plain_forward(random_llama, sequence_logps, padded_labels):
    model = random_llama(32, 0).eval()
    examples = EXAMPLES + [Pair([3, 1, 4, 1, 5], [9, 2, 6, 5, 3], [5])]
    # prompts that start alike, one of them the start itself, and the same prompt twice
    alike = [Pair([3, 1, 4, 2], [7, 8], [9]), Pair([3, 1], [6], [5, 4]), Pair([3, 1, 4, 2], [2, 2], [3]),
             Pair([3, 1, 5], [1], [2, 9, 9])]  # fmt: skip
    for batch, tokens in ((examples, [2, 1, 5, 1, 2, 1]), (alike, [2, 1, 2, 1, 1, 2, 1, 3])):
        padded = PaddedCollator(pad_token_id=0)(batch)
        with torch.no_grad():
            logits = model(input_ids=padded.input_ids, attention_mask=padded.attention_mask).logits
            reference = sequence_logps(logits, padded_labels(padded))
            collators = [PaddedCollator(0), SharedPrefixCollator(0), SharedPrefixCollator(0, pad_to_multiple_of=8)]
            collators += [SharedPrefixCollator(0, pack_length=n) for n in (1, 12, 30, 1000)]
            collators += [SharedPrefixCollator(0, pad_to_multiple_of=8, pack_length=1000)]  # a GPU's rounded rows
            for collator in collators:
                scores = score_sequences(model, collator(batch))
                torch.testing.assert_close(scores.logps, reference, rtol=1e-5, atol=1e-5)
                assert scores.tokens.tolist() == tokens


def test_a_shared_prompt_start_gets_the_padded_layout_s_gradients(random_llama):
    examples = [Pair([3, 1, 4, 2], [7, 8], [9]), Pair([3, 1, 4, 2], [2, 2], [3]), Pair([3, 1], [6], [5, 4])]
    model = random_llama(32, 0)

    def gradients(collator):
        model.zero_grad()
        score_sequences(model, collator(examples)).logps.sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    packed = SharedPrefixCollator(0, pack_length=1000)
    assert packed(examples).segments[0, :2].tolist() == [-8, -8]  # the shared start: [3, 1]
    want = gradients(PaddedCollator(0))
    for name, grad in gradients(packed).items():
        torch.testing.assert_close(grad, want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_packing_balances_rows_and_keeps_pairs_apart():
    batch = SharedPrefixCollator(pad_token_id=0, pack_length=100)(EXAMPLES)  # 6 + 5 tokens: one row
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 0, 1, 2, 2, 3]]
    mask = batch.attention_mask[0, 0]
    assert not mask[6:, :6].any() and not mask[:6, 6:].any()  # block-diagonal: pairs never see each other
    assert batch.completions.index.tolist() == [2, 3, 2, 7, 7, 9]
    assert SharedPrefixCollator(0, pack_length=6)(EXAMPLES).input_ids.shape == (2, 6)  # 11 tokens: 2 rows


def test_packing_computes_the_fewest_tokens_within_the_row_length():
    long = [420, 380, 360, 336]  # dialogue-length pairs, 1,496 tokens
    assert pack_rows(long, 512) == [[0], [1], [2], [3]]  # 1,680 tokens; ceil(1,496 / 512) = 3 rows: 3 x 696
    assert pack_rows(long, 2048) == [[0, 1, 2, 3]]  # one row: no padding
    assert pack_rows([10, 10, 10, 10], 40) == [[0, 1, 2, 3]]  # the fewest rows among equals
    assert pack_rows([70, 60], 512, multiple=64) == [[0, 1]]  # 192 tokens rounded, where two rows are 2 x 128
    assert pack_rows([5, 9, 4], 0) == [[0], [1], [2]]
    generator = random.Random(0)
    for _ in range(200):
        lengths = [generator.randint(1, 300) for _ in range(generator.randint(1, 24))]
        pack_length, multiple = generator.choice([64, 200, 512]), generator.choice([None, 8, 64])
        rows = pack_rows(lengths, pack_length, multiple)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        sizes = [sum(lengths[i] for i in row) for row in rows]
        assert max(sizes) <= max(pack_length, *lengths)
        width = -(-max(sizes) // multiple) * multiple if multiple else max(sizes)
        assert len(rows) * width <= len(lengths) * row_width([max(lengths)], multiple)  # never worse than a pair a row


def test_a_batch_moves_as_one_object():
    batch = SharedPrefixCollator(pad_token_id=0)(EXAMPLES).to("meta")
    assert batch.input_ids.device.type == batch.completions.index.device.type == "meta"
    assert batch.desirable is None
