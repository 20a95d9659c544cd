"""On image rows, lit_dpo's loss and metrics equal TRL's DPOTrainer (fp32, a tiny random policy of each family and a
different reference), with prefix sharing (each pair's images through the vision encoder once) and without."""

import pytest
from PIL import Image

from lit_dpo.data import PaddedCollator, SharedPrefixCollator, parse_row
from lit_dpo.data.tokenize import tokenize_rows
from lit_dpo.hf import load_processor

KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"]
KEYS += ["logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"]


def _rows():
    """TRL's vision format: PIL images in ``images``, an image part in each prompt, text completions."""
    rows = []
    for i in range(4):
        images = [Image.new("RGB", (24 + 8 * i, 32 - 4 * j), (40 * i, 200 - 50 * j, 90)) for j in range(1 + i % 2)]
        content = [{"type": "image"}] * len(images) + [{"type": "text", "text": f"what color {i}?"}]
        rows.append({"prompt": [{"role": "user", "content": content}],
                     "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "red yes"}]}],
                     "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "no blue " * (1 + i)}]}],
                     "images": images})  # fmt: skip
    return rows


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "sft"])  # sft: reference-free (the NLL of chosen)
def test_image_rows_match_trl(any_tiny_vlm_dirs, tmp_path, loss_type, dpo_module, step_metrics):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText

    policy_dir, ref_dir = any_tiny_vlm_dirs
    processor = load_processor(policy_dir)
    args = trl.DPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, beta=0.3,
                         loss_type=[loss_type])  # fmt: skip
    trainer = trl.DPOTrainer(model=AutoModelForImageTextToText.from_pretrained(policy_dir),
                             ref_model=AutoModelForImageTextToText.from_pretrained(ref_dir), args=args,
                             train_dataset=Dataset.from_list(_rows()), processing_class=processor)  # fmt: skip
    trainer.model.train()
    batch = trainer.data_collator(list(trainer.train_dataset))
    loss = trainer._compute_loss(trainer.model, batch, return_outputs=False).item()
    expected = {k: v[-1] for k, v in trainer._metrics["train"].items()} | {"loss": loss}
    examples = tokenize_rows(processor.tokenizer, [parse_row(row) for row in _rows()], processor)
    module = dpo_module(model_name_or_path=policy_dir, ref_model_name_or_path=ref_dir, beta=0.3, loss_type=loss_type)
    pad, pixels = processor.tokenizer.pad_token_id, processor.image_processor
    got = {}
    for layout, collate in [("padded", PaddedCollator(pad, image_processor=pixels)),
                            ("shared", SharedPrefixCollator(pad, image_processor=pixels)),
                            ("packed", SharedPrefixCollator(pad, image_processor=pixels, pack_length=256))]:  # fmt: skip
        got[layout] = step_metrics(module, collate(examples))
    assert expected["rewards/margins"] != 0  # a different reference: not trivially 0 == 0
    for layout, metrics in got.items():
        for key in KEYS:
            assert metrics[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (layout, key)
