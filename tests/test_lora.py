"""lit_dpo/lora.py: adapters on a frozen base, and their merge into plain weights (what the export writes)."""

import torch

from lit_dpo import lora


def test_adapters_train_alone_and_merge_into_the_base_weights(random_llama):
    model = lora.add_adapters(random_llama(64, 0), r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    assert lora.is_lora(model) and lora.scaling(model) == 2.0
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)  # adapters away from their zero start
    merged = lora.merged_state_dict(model.state_dict(), lora.scaling(model))
    plain = random_llama(64, 0)
    plain.load_state_dict(merged)  # the base model's own names, nothing missing or extra
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
