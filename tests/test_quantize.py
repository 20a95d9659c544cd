"""QLoRA (``lit_dpo.quantize``): a 4-bit NF4 base under LoRA adapters trains like the full-precision base within
quantization error, checkpoints its adapters only, resumes, and exports a full-precision merged model."""

import csv
import types

import pytest
import torch
from transformers import AutoModelForCausalLM

from lit_dpo import DPOModule, export, fit, lora, quantize
from lit_dpo.errors import InputError
from lit_dpo.hf import load_model
from lit_dpo.models import ModelSpec, Run, build_models
from lit_dpo.parallel import FSDPStrategy
from lit_dpo.scoring import score_sequences


def _fit(model_dir, pair_files, root, fit_args, *options):
    fit.main(fit_args(model_dir, *pair_files, root, "--model.lora_r=8", "--model.learning_rate=1e-2",
                      "--finish.report=false", *options))  # fmt: skip
    with open(root / "lightning_logs" / "version_0" / "metrics.csv") as handle:
        return [float(r["train/loss"]) for r in csv.DictReader(handle) if r["train/loss"]]


def test_quantization_needs_lora_adapters(tiny_model_dir):
    with pytest.raises(InputError, match="set --model.lora_r"):
        DPOModule(model_name_or_path=tiny_model_dir, quantization="nf4")
    with pytest.raises(InputError, match="lit_dpo knows nf4"):
        quantize.check("int3", 8)


def test_a_sharded_4bit_base_is_refused(tiny_model_dir):
    trainer = types.SimpleNamespace(strategy=FSDPStrategy())
    with pytest.raises(InputError, match="cannot be sharded"):
        build_models(ModelSpec(tiny_model_dir, lora_r=4, quantization="nf4"), Run(True, False, trainer=trainer))


def test_the_4bit_base_scores_as_the_full_one_within_quantization_error(tiny_model_dir, make_batch, standard_rows):
    full, four = load_model(tiny_model_dir), load_model(tiny_model_dir, quantization="nf4")
    assert quantize.is_quantized(four) and not quantize.is_quantized(full)
    linear_bytes = [
        sum(p.numel() * p.element_size() for n, p in m.named_parameters() if "layers." in n) for m in (full, four)
    ]
    assert linear_bytes[1] < 0.2 * linear_bytes[0]  # 4 bits (+ scales) for 32
    batch = make_batch(standard_rows(4))
    with torch.no_grad():
        exact, approx = (score_sequences(m, batch).logps for m in (full, four))
    assert not torch.equal(exact, approx)
    torch.testing.assert_close(approx, exact, rtol=0.05, atol=0.5)  # summed over ~30 tokens


def test_an_eval_pass_leaves_the_gradients_as_they_were(tiny_model_dir, make_batch, standard_rows):
    """A validation or generation (eval mode, no gradient) must not switch the 4-bit layers to an inference-only
    layout (bitsandbytes does on AVX512-BF16 CPUs): the next training step's gradients stay the same."""

    def gradients(eval_first):
        torch.manual_seed(0)
        policy = lora.add_adapters(load_model(tiny_model_dir, quantization="nf4").train(), 4, 16, 0.0, "all-linear")
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param)  # adapters that change the output, so gradients reach every layer
        batch = make_batch(standard_rows(2))
        if eval_first:
            policy.eval()
            with torch.no_grad():
                score_sequences(policy, batch)
            policy.train()
        score_sequences(policy, batch).logps.sum().backward()
        return {n: p.grad for n, p in policy.named_parameters() if p.requires_grad}

    plain, after_eval = gradients(False), gradients(True)
    assert all(torch.equal(plain[name], after_eval[name]) for name in plain)


def test_a_qlora_fit_trains_as_the_full_base_checkpoints_adapters_resumes_and_exports(
    tiny_model_dir, pair_files, tmp_path, fit_args
):
    full = _fit(tiny_model_dir, pair_files, tmp_path / "full", fit_args, "--trainer.max_steps=3")
    four = _fit(
        tiny_model_dir, pair_files, tmp_path / "four", fit_args, "--trainer.max_steps=3", "--model.quantization=nf4"
    )
    assert four[0] == pytest.approx(full[0], abs=1e-6)  # log 2: policy == reference at the start, in both
    assert four[1:] == pytest.approx(full[1:], abs=0.1) and four[-1] < four[0]  # trains, within quantization error
    assert four[1:] != full[1:]  # on a base that is really 4-bit
    run = tmp_path / "four" / "lightning_logs" / "version_0"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert saved and all(".lora_" in key for key in saved)  # the adapters only, not the 4-bit base
    exported = AutoModelForCausalLM.from_pretrained(run / "hf_model")
    assert not quantize.is_quantized(exported) and exported.dtype == torch.float32
    export.main(["--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--export_dir", str(tmp_path / "again")])
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again").state_dict()
    assert all(torch.equal(again[k], v) for k, v in exported.state_dict().items())  # merged into the same base
    longer = _fit(tiny_model_dir, pair_files, tmp_path / "four", fit_args, "--trainer.max_steps=4", "--model.quantization=nf4",
                  "--ckpt_path=last")  # fmt: skip
    assert len(longer) == 4 and longer[:3] == four  # resumed at step 3 with its adapters and optimizer state
