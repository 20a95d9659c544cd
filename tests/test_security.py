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


class _RunsCode:
    """What a crafted distributed checkpoint's .metadata unpickles to: a call of the attacker's choosing."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "the payload ran"))


def test_a_crafted_distributed_checkpoint_is_refused_without_running_its_payload(tmp_path, capsys, fit_args):
    import torch.distributed.checkpoint as dcp

    from lit_dpo import fit
    from lit_dpo.checkpoints import check_distributed_checkpoint

    real = tmp_path / "real.ckpt"
    dcp.save({"w": torch.randn(3, 4), "extra": {"step": 3}}, checkpoint_id=str(real))
    check_distributed_checkpoint(real)  # torch's own metadata passes
    crafted = tmp_path / "crafted.ckpt"
    crafted.mkdir()
    marker = tmp_path / "ran.txt"
    (crafted / ".metadata").write_bytes(pickle.dumps(_RunsCode(str(marker))))
    (crafted / "meta.pt").write_bytes((real / ".metadata").read_bytes())
    with pytest.raises(SystemExit) as exit_info:
        fit.main(fit_args("./no_model_needed", "a.jsonl", "b.jsonl", tmp_path / "run", f"--ckpt_path={crafted}"))
    assert exit_info.value.code == 2 and not marker.exists()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"lit_dpo: error: {crafted}: not a distributed checkpoint lit_dpo will load (")
    assert "is not allowed in a distributed checkpoint's metadata" in line


def test_a_judge_import_leaves_sys_path_as_it_was(tmp_path, monkeypatch):
    import sys

    from lit_dpo.judges import load_judge

    (tmp_path / "my_rewards.py").write_text(
        "def short(prompts, completions, **columns):\n    return [0.0] * len(prompts)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != ""])
    before = list(sys.path)
    assert callable(load_judge("my_rewards.short"))  # importable from the working directory, as python -m has it
    assert sys.path == before


def test_a_cache_folder_others_can_write_to_is_refused(tmp_path, monkeypatch):
    from lit_dpo.errors import InputError
    from lit_dpo.hf import private_dir

    shared = tmp_path / "shared_cache"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("LIT_DPO_CACHE", str(shared))
    with pytest.raises(InputError, match=rf"cache folder {shared} is writable by other users \(mode 777\)"):
        private_dir(shared / "ref_logps")
    shared.chmod(0o700)
    assert private_dir(shared / "ref_logps").is_dir() and (shared / "ref_logps").stat().st_mode & 0o777 == 0o700
