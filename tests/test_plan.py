"""lit_dpo/plan.py: ``python -m lit_dpo.plan`` takes the fit's options and prints the plan; mistakes are one line."""

import json
import shutil

import pytest

from lit_dpo.plan import main

FSDP = "--trainer.strategy.class_path=lit_dpo.parallel.FSDPStrategy"


def plan(tmp_path, *args: str) -> dict:
    output = tmp_path / "plan.json"
    main([*args, f"--output={output}"])
    return json.loads(output.read_text())


def test_plan_of_a_fit_on_this_machine(tiny_model_dir, tmp_path, capsys):
    result = plan(tmp_path, f"--model.model_name_or_path={tiny_model_dir}", "--memory_gb=1")
    shown = capsys.readouterr().out
    assert "peak" in shown and "fits" in shown and "--model.activation_checkpointing=true" in shown
    parts = result["parts"]
    assert result["fits"] and parts["peak"] < 2**30
    assert parts["weights"] > 0 and parts["optimizer"] == 2 * parts["weights"]  # fp32 AdamW moments
    assert result["hardware"] == {"accelerator": "cpu", "devices": 1, "nodes": 1, "strategy": "single", "hsdp": False}
    assert result["rows"] == {"rows": 4, "length": 1536, "scored": 4096}  # 4 pairs of 512 + 512 tokens a row


def test_plan_for_gpus_this_machine_lacks(tiny_model_dir, tmp_path):
    args = [f"--model.model_name_or_path={tiny_model_dir}", "--trainer.accelerator=gpu", "--trainer.devices=8",
            "--trainer.num_nodes=2", "--memory_gb=80"]  # fmt: skip
    fsdp = plan(tmp_path, "--config=recipes/strategy/fsdp.yaml", *args)
    assert fsdp["hardware"] == {"accelerator": "gpu", "devices": 8, "nodes": 2, "strategy": "fsdp", "hsdp": False}
    ddp = plan(tmp_path, *args, "--trainer.strategy=ddp")
    assert ddp["parts"]["weights"] == 16 * fsdp["parts"]["weights"]  # sharded over 16 processes
    hsdp = plan(tmp_path, *args, FSDP, "--trainer.strategy.hsdp=true")
    assert hsdp["parts"]["weights"] == 2 * fsdp["parts"]["weights"]  # sharded within a node of 8
    small = plan(tmp_path, *args, "--trainer.strategy=ddp", "--memory_gb=0.001")
    assert not small["fits"]


def test_plan_follows_the_options(tiny_model_dir, tmp_path):
    base = [f"--model.model_name_or_path={tiny_model_dir}", "--data.max_length=64"]
    default = plan(tmp_path, *base)["parts"]
    checkpointed = plan(tmp_path, *base, "--model.activation_checkpointing=true")["parts"]
    assert checkpointed["activations"] < default["activations"]
    assert plan(tmp_path, *base, "--model.loss_type=simpo")["parts"]["reference"] == 0
    live = plan(tmp_path, *base, "--trainer.max_steps=5")["parts"]  # caching would depend on the data's size
    assert live["reference"] == default["weights"] and default["reference"] == 0 and default["reference_pass"] > 0
    mixed = plan(tmp_path, *base, "--trainer.precision=bf16-mixed")["parts"]
    assert mixed["weights"] == default["weights"] and mixed["activations"] != default["activations"]
    assert plan(tmp_path, *base, "--trainer.precision=bf16-true")["parts"]["weights"] == default["weights"] / 2
    assert plan(tmp_path, *base, "--data.prefix_sharing=false")["rows"] == {"rows": 8, "length": 64, "scored": 256}


def test_the_reference_pass_follows_its_batches_and_the_weights_file(tiny_model_dir, tmp_path):
    base = [f"--model.model_name_or_path={tiny_model_dir}", "--data.max_length=64"]
    default = plan(tmp_path, *base)["parts"]  # the validation batch: 8 pairs
    assert plan(tmp_path, *base, "--data.val_batch_size=16")["parts"]["reference_pass"] > default["reference_pass"]
    # one CPU process: the reference maps the policy's own file, one copy of the weights; another file, two
    other = shutil.copytree(tiny_model_dir, tmp_path / "reference")
    apart = plan(tmp_path, *base, f"--model.ref_model_name_or_path={other}")["parts"]
    assert apart["reference_pass"] == default["reference_pass"] + default["weights"]
    gpu = plan(tmp_path, *base, "--trainer.accelerator=gpu", "--trainer.devices=1", "--memory_gb=80")["parts"]
    assert gpu["reference_pass"] > default["reference_pass"] + 0.9 * default["weights"]  # copied to the device


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.model_name_or_path=./no/such/model"], "no/such/model"),
        (["--trainer.accelerator=gpu"], "--trainer.devices=N"),
        (["--data.max_length=null"], "--prompt_tokens"),
        (["--trainer.strategy=deepspeed"], "--trainer.strategy=deepspeed"),
        (["--model.beta=-1"], "--model.beta must be > 0"),
    ],
)
def test_mistakes_are_one_line(tiny_model_dir, args, message, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(SystemExit) as exit:
        main([f"--model.model_name_or_path={tiny_model_dir}", *args])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("lit_dpo: error:")
