"""What keeps a run safe to start on shared machines: no pickle code from checkpoints, no Hub code unless asked,
an unprivileged and pinned Docker image, and a CI token that can only read."""

import ast
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml

from lit_dpo.checkpoints import AtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """What a malicious checkpoint would unpickle to run code."""


def test_checkpoints_load_without_running_pickled_code(tmp_path):
    torch.save({"global_step": 1, "payload": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "evil.ckpt", weights_only=False)  # the caller cannot widen it


def test_every_torch_load_in_lit_dpo_is_weights_only():
    calls = []
    for path in (ROOT / "lit_dpo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((path.name, keywords.get("weights_only")))
    assert calls and all(value == "True" for _, value in calls), calls
    assert re.search(r'"torch>=2\.6"', (ROOT / "pyproject.toml").read_text())  # weights_only=True by default too


def test_trust_remote_code_is_off_by_default_and_reaches_the_tokenizer(tiny_model_dir, monkeypatch):
    from transformers import AutoTokenizer

    from lit_dpo.cli import DPOCLI

    seen = []
    real = AutoTokenizer.from_pretrained
    monkeypatch.setattr(
        AutoTokenizer, "from_pretrained", lambda *a, **k: seen.append(k.get("trust_remote_code")) or real(*a, **k)
    )
    for flag, expected in ((None, False), ("true", True)):
        args = [f"--model.model_name_or_path={tiny_model_dir}"] + (
            [f"--model.trust_remote_code={flag}"] if flag else []
        )
        cli = DPOCLI(args)
        assert cli.model.hparams.trust_remote_code is expected and cli.datamodule.hparams.trust_remote_code is expected
        cli.datamodule.setup("fit")
        assert seen[-1] is expected


def test_the_docker_image_runs_unprivileged_with_pinned_versions():
    lines = [line.strip() for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    entry = next(i for i, line in enumerate(lines) if line.startswith("ENTRYPOINT"))
    assert users and users[-1] not in ("root", "0") and lines.index(f"USER {users[-1]}") < entry
    assert any("-c docker/constraints.txt" in line for line in lines)
    pins = [line for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines() if not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][^\s=]*", pin) for pin in pins), pins
    tested = re.search(r"torch==([0-9.]+)", (ROOT / ".ci" / "run").read_text()).group(1)
    assert f"torch=={tested}" in pins  # the torch the tests run on


def test_ci_can_only_read_and_keeps_no_credentials():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert workflow["permissions"] == {"contents": "read"}
    checkouts = [
        step for job in workflow["jobs"].values() for step in job["steps"] if "checkout" in step.get("uses", "")
    ]
    assert checkouts and all(step["with"]["persist-credentials"] is False for step in checkouts)
