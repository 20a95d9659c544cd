"""A vision-language model (a tiny random Idefics3, SmolVLM's family) trained end to end through the CLI on rows
with images: the vision encoder frozen, the language model trained, the processor exported with the model."""

import csv
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lit_dpo import fit

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _rows(folder, n, seed):
    (folder / "pics").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        size = (24 + 8 * (i % 3), 32)
        Image.new("RGB", size, (40 * (i % 6), 200 - 30 * (i % 5), 90)).save(folder / "pics" / f"{seed}_{i}.png")
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"what color {i}?"}]}]
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": "red yes"}],
                     "rejected": [{"role": "assistant", "content": "no blue " * (1 + i % 3)}],
                     "images": [f"pics/{seed}_{i}.png"]})  # fmt: skip
    path = folder / f"rows_{seed}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# where each family keeps its vision encoder and its language model's layers in the saved weights' names
TOWERS = {
    "idefics3": (".vision_model.", ".text_model."),
    "qwen2_vl": ("visual.", "model.layers."),
    "llava": ("vision_tower.", "language_model.model.layers."),
    "gemma3": ("vision_tower.", "language_model.model.layers."),
}  # as saved


@pytest.mark.integration
@pytest.mark.parametrize("family, layout", [("idefics3", "shared"), ("idefics3", "padded"), ("idefics3", "lora"),
                                            ("qwen2_vl", "shared"), ("qwen2_vl", "lora"), ("llava", "shared"),
                                            ("gemma3", "shared")])  # fmt: skip
def test_a_vision_language_fit_through_the_cli(vlm_dirs_of, tmp_path, fit_args, capsys, family, layout):
    """Full fine-tuning (vision frozen) with and without prefix sharing; LoRA: adapters on the language model only,
    the reference the base model, merged into the export. Qwen2-VL: multimodal rope placed by lit_dpo; LLaVA;
    Gemma 3: image blocks in the shared mask."""
    tiny_vlm_dir = vlm_dirs_of(family)[0]
    train, val = _rows(tmp_path, 12, 0), _rows(tmp_path, 4, 1)
    extra = ["--trainer.max_steps=3", "--data.batch_size=4", "--model.learning_rate=1e-3", "--trainer.max_epochs=1",
             f"--data.prefix_sharing={layout != 'padded'}"] + (["--model.lora_r=4"] if layout == "lora" else [])  # fmt: skip
    fit.main(fit_args(tiny_vlm_dir, train, val, tmp_path / "run", *extra))
    run = tmp_path / "run" / "lightning_logs" / "version_0"
    with open(run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(r["train/loss"]) for r in rows if r["train/loss"]]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5) and len(losses) == 3  # policy == reference at first
    final = [r for r in rows if r["val/loss"]][-1]
    assert math.isfinite(float(final["val/rewards/margins"]))
    assert 0 <= float(final["val/win_rate"]) <= 1  # WinRate generated from the held-out prompts and their images
    before, after = load_file(f"{tiny_vlm_dir}/model.safetensors"), load_file(run / "hf_model" / "model.safetensors")
    vision_part, language_part = TOWERS[family]
    vision = [k for k in before if vision_part in k]
    language = [k for k in before if language_part in k and "layers" in k]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)  # frozen by default
    assert any(not torch.equal(before[k], after[k]) for k in language)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(run / "hf_model")  # exported beside the model
    assert processor.image_token in ("<image>", "<|image_pad|>", "<start_of_image>") and processor.chat_template
    assert AutoModelForImageTextToText.from_pretrained(run / "hf_model").config.model_type == family
    assert "AutoModelForImageTextToText.from_pretrained" in capsys.readouterr().out
    assert "pipeline_tag: image-text-to-text" in (run / "hf_model" / "README.md").read_text()


def _losses(run):
    with open(run / "lightning_logs" / "version_0" / "metrics.csv") as handle:
        return [float(r["train/loss"]) for r in csv.DictReader(handle) if r["train/loss"]]


@pytest.mark.integration
def test_fsdp_on_two_processes_trains_as_one_process(tiny_vlm_dir, tmp_path, fit_args):
    """FSDP2 shards the vision encoder's and the language model's layers; 2 ranks of 2 pairs = 1 process of 4;
    generations from image prompts run with the sharded model."""
    train, val = _rows(tmp_path, 8, 0), _rows(tmp_path, 4, 1)
    common = ["--trainer.max_steps=2", "--model.learning_rate=1e-3", "--data.shuffle=false", "--model.warmup_steps=0"]
    fit.main(fit_args(tiny_vlm_dir, train, val, tmp_path / "one", *common, "--data.batch_size=4"))
    fsdp = ["--config", str(RECIPES / "strategy" / "fsdp.yaml"), "--trainer.accelerator=cpu", "--trainer.devices=2"]
    command = [sys.executable, "-m", "lit_dpo.fit", *fsdp, *fit_args(tiny_vlm_dir, train, val, tmp_path / "fsdp",
               *common, "--data.batch_size=2")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert _losses(tmp_path / "fsdp") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5)
    assert len(_losses(tmp_path / "one")) == 2
    # WinRate generated from the image prompts with the sharded model, its ranks decoding in lockstep
    with open(tmp_path / "fsdp" / "lightning_logs" / "version_0" / "metrics.csv") as handle:
        assert [r for r in csv.DictReader(handle) if r["val/win_rate"]]


def test_a_missing_image_stops_the_fit_with_one_line(tiny_vlm_dir, tmp_path, fit_args, capsys):
    train = _rows(tmp_path, 4, 0)
    (tmp_path / "pics" / "0_2.png").unlink()
    with pytest.raises(SystemExit):
        fit.main(fit_args(tiny_vlm_dir, train, train, tmp_path / "run", "--trainer.max_steps=1"))
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(f"lit_dpo: error: {train}, row 3, field 'images[0]': cannot read image file")
    )


def test_images_reach_the_examples_through_the_store(tiny_vlm_dir, tmp_path):
    from lit_dpo.data import PreferenceDataModule

    data = PreferenceDataModule(path=_rows(tmp_path, 4, 0), val_split=0, tokenizer_name_or_path=tiny_vlm_dir,
                                cache_dir=str(tmp_path / "cache"))  # fmt: skip
    data.setup("fit")
    first = data.train_examples[0]
    assert len(first.images) == 1 and Image.open(io.BytesIO(first.images[0])).size == (24, 32)
    assert first.prompt_ids.count(data.processor.image_token_id) > 0
    batch = data.collator()(list(data.train_examples))
    assert batch.vision is not None and batch.vision.images > 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "rows_0.jsonl").write_text((tmp_path / "rows_0.jsonl").read_text())
    (other / "pics").mkdir()
    for picture in (tmp_path / "pics").iterdir():  # the same rows, one image different
        image = Image.open(picture).convert("RGB")
        if picture.name == "0_1.png":
            image.putpixel((0, 0), (1, 2, 3))
        image.save(other / "pics" / picture.name)
    changed = PreferenceDataModule(path=str(other / "rows_0.jsonl"), val_split=0, tokenizer_name_or_path=tiny_vlm_dir,
                                   cache_dir=str(tmp_path / "cache"))  # fmt: skip
    changed.setup("fit")
    assert changed.train_examples[0].prompt_ids == first.prompt_ids
    assert changed.fingerprint() != data.fingerprint()  # what resumes and the reference cache compare


def test_a_prompt_over_the_limits_with_images_is_dropped_not_cut(tiny_vlm_dir, tmp_path):
    """Cutting a prompt's start would cut image tokens whose pixels the batch still carries: such rows are dropped
    and counted, whatever --data.truncation keeps of text rows."""
    from lit_dpo.data import PreferenceDataModule

    path = _rows(tmp_path, 4, 0)
    options = dict(path=path, val_split=0, tokenizer_name_or_path=tiny_vlm_dir, cache_dir=str(tmp_path / "cache"))
    whole = PreferenceDataModule(**options)
    whole.setup("fit")
    prompt = len(whole.train_examples[0].prompt_ids)
    cut = PreferenceDataModule(**options, max_prompt_length=prompt - 1)  # every prompt over the limit
    with pytest.raises(Exception, match="every row was dropped by the length limits"):
        cut.setup("fit")
    short = PreferenceDataModule(**options, max_length=prompt + 2)  # room for the prompt, completions cut
    short.setup("fit")
    assert all(len(ex.chosen_ids) <= 2 and ex.images for ex in short.train_examples)


def test_the_data_report_counts_images_and_image_tokens(tiny_vlm_dir, tmp_path):
    from lit_dpo.data import PreferenceDataModule
    from lit_dpo.data.summary import build_report

    data = PreferenceDataModule(path=_rows(tmp_path, 4, 0), val_split=0, tokenizer_name_or_path=tiny_vlm_dir,
                                cache_dir=str(tmp_path / "cache"))  # fmt: skip
    data.setup("fit")
    report = build_report(data)
    tokens = report["sources"][0]["tokens"]
    per_row = [ex.prompt_ids.count(data.processor.image_token_id) for ex in data.train_examples]
    assert tokens["images"]["max"] == 1 and tokens["image tokens"]["max"] == max(per_row) > 0
    prompt = report["first_example"]["prompt"]
    assert "<image>x4" in prompt and "<image><image>" not in prompt  # each tile's 4 tokens as one placeholder


def test_streamed_image_rows_carry_their_images(tiny_vlm_dir, tmp_path):
    from lit_dpo.data import PreferenceDataModule

    options = dict(path=_rows(tmp_path, 6, 0), val_split=0, tokenizer_name_or_path=tiny_vlm_dir, shuffle=False,
                   cache_dir=str(tmp_path / "cache"))  # fmt: skip
    stored, streamed = PreferenceDataModule(**options), PreferenceDataModule(**options, streaming=True, stream_window=4)
    stored.setup("fit")
    streamed.setup("fit")
    pairs = list(streamed.stream)
    assert [(ex.prompt_ids, ex.images) for ex in pairs] == [(ex.prompt_ids, ex.images) for ex in stored.train_examples]
    assert streamed.collator()(pairs[:2]).vision.images > 0


@pytest.mark.parametrize("family", ["idefics3", "qwen2_vl", "llava", "gemma3"])
def test_generation_from_image_prompts_runs_the_vision_encoder(vlm_dirs_of, tmp_path, family):
    """WinRate's generations: each held-out prompt's images reach the model, and the judge's columns; greedy
    answers do not depend on the batch (left padding, Qwen2-VL's positions) nor on decoding in lockstep."""
    from lit_dpo.data import PreferenceDataModule
    from lit_dpo.generation import Sampling, generate
    from lit_dpo.hf import load_model
    from lit_dpo.models import vision_tower

    tiny_vlm_dir = vlm_dirs_of(family)[0]

    data = PreferenceDataModule(path=_rows(tmp_path, 3, 0), val_path=_rows(tmp_path, 3, 1),
                                tokenizer_name_or_path=tiny_vlm_dir, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    data.setup("fit")
    prompts = data.held_out_prompts(3)
    assert [len(p.images) for p in prompts] == [1, 1, 1] and all(len(p.columns["images"]) == 1 for p in prompts)
    model, calls = load_model(tiny_vlm_dir), []
    vision_tower(model).register_forward_hook(lambda *_: calls.append(1))
    pad, eos = data.tokenizer.pad_token_id, data.tokenizer.eos_token_id
    answer = lambda batch_size, lockstep=None: generate(  # noqa: E731
        model, [p.prompt_ids for p in prompts], Sampling(max_new_tokens=3), pad, eos, batch_size=batch_size,
        lockstep_rows=lockstep, images=[p.images for p in prompts], processor=data.processor,
    )  # fmt: skip
    answers = answer(2)
    assert len(answers) == 3 and len(calls) == 2  # one encoder pass per batch of prompts, at the prompt's forward
    assert answers == answer(1)
    # FSDP's lockstep decoding (the model's own forward with the KV cache; lit_dpo places Qwen2-VL's positions)
    assert answers == answer(2, lockstep=4)


def test_a_qwen2_vl_processor_without_torchvision_is_one_line(vlm_dirs_of, tmp_path):
    """transformers builds Qwen2-VL's video processor with torchvision only: the user is told what to install."""
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: the processor loads")
    from lit_dpo.errors import InputError
    from lit_dpo.hf import load_processor

    folder = shutil.copytree(vlm_dirs_of("qwen2_vl")[0], tmp_path / "qwen")
    config = json.loads((folder / "processor_config.json").read_text())
    (folder / "processor_config.json").write_text(json.dumps(config | {"processor_class": "Qwen2VLProcessor"}))
    with pytest.raises(InputError, match="its video processor needs torchvision"):
        load_processor(str(folder))
