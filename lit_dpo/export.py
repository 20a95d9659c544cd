"""``python -m lit_dpo.export``: the Hugging Face folder (with its model card) of any lit_dpo checkpoint, without the
training data::

    python -m lit_dpo.export --ckpt_path=runs/lightning_logs/version_0/checkpoints/last.ckpt --export_dir=my_model
    python -m lit_dpo.export --ckpt_path=last --root=runs --export_dir=my_model   # the newest run under runs/
    python -m lit_dpo.export --ckpt_path=... --export_dir=my_adapter --adapter_only

A checkpoint is a ``.ckpt`` file or a distributed (FSDP) checkpoint's folder; only the policy's weights are read
(no optimizer state, no reference). LoRA adapters are merged unless ``--adapter_only``. The export follows the fit's
rules: written whole or not at all, and only into a new or empty folder or over a previous lit_dpo export.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import torch
from jsonargparse import ArgumentParser

from lit_dpo.callbacks.progress import quiet_third_party_noise
from lit_dpo.card import card_of, checkpoint_run, write_card
from lit_dpo.checkpoints import check_distributed_checkpoint, resumable_checkpoints
from lit_dpo.cli import CommandParser, user_errors
from lit_dpo.errors import InputError
from lit_dpo.hf import check_export_dir, export_adapter, export_policy, load_preprocessor
from lit_dpo.models import ModelSpec, Run, build_models
from lit_dpo.module import DPOModule
from lit_dpo.options import DPOOptions

DESCRIPTION = "The Hugging Face folder (and model card) of a lit_dpo checkpoint: a .ckpt file, an FSDP checkpoint's folder, or the newest run's. LoRA adapters are merged unless --adapter_only."
POLICY = "policy."  # the policy's weights in a checkpoint's state_dict: the module's ``policy`` attribute


def export_checkpoint(ckpt_path: str, export_dir: str, root: str = "runs", adapter_only: bool = False) -> Path:
    """Write the policy of a checkpoint as a Hugging Face folder with its model card.

    Args:
        ckpt_path: A ``.ckpt`` file, a distributed checkpoint's folder, or ``last``: the newest run's under ``root``.
        export_dir: The folder to write (new, empty, or a previous lit_dpo export).
        root: Where ``last`` looks: the fit's ``--trainer.default_root_dir``.
        adapter_only: Write the LoRA adapters alone (PEFT's format) instead of the merged model.
    """
    directory = Path(export_dir)
    check_export_dir(directory)  # before anything loads
    path = _resolve(ckpt_path, Path(root))
    checkpoint = load_checkpoint(path)
    options = checkpoint.get("hyper_parameters")
    if not options or "model_name_or_path" not in options:
        raise InputError(f"{path}: not a lit_dpo checkpoint (it records no DPOModule options)")
    accepted = inspect.signature(DPOOptions).parameters  # Lightning records more (the CLI's _instantiator)
    module = DPOModule(**{k: v for k, v in options.items() if k in accepted})  # checks the options; loads no model
    # a QLoRA checkpoint holds the adapters only: they go onto the full-precision base, which the export merges into
    spec = replace(ModelSpec.from_options(module.hparams), quantization=None)
    policy = build_models(spec, Run(needs_reference=False, unpaired=False)).policy
    weights = {k[len(POLICY) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(POLICY)}
    problems = policy.load_state_dict(weights, strict=False)
    trainable = {name for name, param in policy.named_parameters() if param.requires_grad}
    missing = [k for k in problems.missing_keys if k in trainable or not module.hparams.quantization]
    if missing or problems.unexpected_keys:
        first = (missing or problems.unexpected_keys)[0]
        raise InputError(f"{path}: its weights do not fit {options['model_name_or_path']} (first mismatch: {first})")
    tokenizer = load_preprocessor(module.tokenizer_name_or_path, module.trust_remote_code)  # a VLM: its processor
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    card = card_of(module, checkpoint_run(checkpoint, run_dir), None)
    add_card = lambda folder: write_card(card, folder, run_dir)  # noqa: E731
    if adapter_only:
        export_adapter(policy, tokenizer, directory, add_card)
    else:
        export_policy(policy, tokenizer, directory, None, add_card)
    return directory


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents but its optimizer state: a file, or a distributed checkpoint's folder (its shards
    read into full tensors, in this one process)."""
    if not path.exists():
        raise InputError(f"--ckpt_path {path}: no such file or folder")
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    # as Lightning's own _load_distributed_checkpoint does: the public dcp.load only fills keys it is given
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    check_distributed_checkpoint(path)  # its .metadata is unpickled: refused if it holds anything else
    weights: dict[str, Any] = {}
    planner = _EmptyStateDictLoadPlanner(keys={"state_dict"})  # the model's weights, not the optimizer's
    _load_state_dict(weights, storage_reader=FileSystemReader(path), planner=planner, no_dist=True)
    meta = torch.load(path / "meta.pt", map_location="cpu", weights_only=True) if (path / "meta.pt").is_file() else {}
    return {**meta, "state_dict": weights["state_dict"]}


def _resolve(ckpt_path: str, root: Path) -> Path:
    if ckpt_path != "last":
        return Path(ckpt_path)
    found = resumable_checkpoints(root)
    if not found:
        raise InputError(f"--ckpt_path=last: no run under {root} has a checkpoint (checkpoints/last.ckpt)")
    return found[-1][1]


def parser() -> ArgumentParser:
    """The command line of ``python -m lit_dpo.export``."""
    parser = CommandParser(prog="python -m lit_dpo.export", description=DESCRIPTION)
    parser.add_argument("--ckpt_path", required=True, help="A .ckpt file, a distributed checkpoint's folder, or "
                        "'last': the newest run's checkpoint under --root.")  # fmt: skip
    parser.add_argument("--export_dir", required=True, help="The folder to write: new, empty, or a lit_dpo export.")
    parser.add_argument("--root", default="runs", help="Where 'last' looks: the fit's --trainer.default_root_dir.")
    parser.add_argument("--adapter_only", action="store_true", help="Write the LoRA adapters alone (PEFT's format) "
                        "instead of the merged model.")  # fmt: skip
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    args = parser().parse_args(argv)
    quiet_third_party_noise()
    with user_errors():
        written = export_checkpoint(args.ckpt_path, args.export_dir, args.root, args.adapter_only)
        reader = "PeftModel.from_pretrained(base, ...)" if args.adapter_only else "AutoModelForCausalLM.from_pretrained"
        print(f"lit_dpo: exported {written}  ({reader}; README.md: its model card)")


if __name__ == "__main__":
    main(sys.argv[1:])
