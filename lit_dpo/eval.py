"""``python -m lit_dpo.eval``: what DPO cost in general ability, for any exported model (``pip install
'lit_dpo[eval]'``)::

    python -m lit_dpo.eval runs/lightning_logs/version_0/hf_model --tasks lit_dpo_arithmetic
    python -m lit_dpo.eval my_model --tasks hellaswag arc_easy --limit 200 --reference Qwen/Qwen2.5-0.5B-Instruct

lm-evaluation-harness's tasks run on the model and on its reference (by default the base model its lit_dpo model
card names), and the table shows both and the delta, as ``--eval_harness.tasks`` does at the end of a fit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import torch
from huggingface_hub import ModelCard
from jsonargparse import ArgumentParser

from lit_dpo import harness
from lit_dpo.callbacks.progress import quiet_third_party_noise
from lit_dpo.cli import CommandParser, user_errors
from lit_dpo.errors import InputError
from lit_dpo.harness.offline import NAME as OFFLINE_TASK
from lit_dpo.hf import load_model, load_tokenizer

DESCRIPTION = (
    "lm-evaluation-harness tasks on a model and its reference (the model before DPO): both scores and the delta."
)


def evaluate_model(
    model_dir: str,
    tasks: list[str],
    reference: Optional[str] = "auto",
    limit: Optional[int] = None,
    num_fewshot: Optional[int] = None,
    batch_size: int = 8,
    device: Optional[str] = None,
    dtype: str = "float32",
) -> dict[str, float]:
    """The ``eval/{reference,policy,delta}/<task>/<metric>`` scores of ``model_dir`` and ``reference`` (``auto``:
    the base model its lit_dpo card names; None or ``none``: the model alone)."""
    folder = Path(model_dir)
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise InputError(f"{model_dir}: not a Hugging Face model folder (no config.json or adapter_config.json)")
    manager = harness.task_manager(tasks)
    harness.check_tasks(tasks, manager, "--tasks")
    base = recorded_base(folder) if reference == "auto" else (None if reference in (None, "none") else reference)
    place = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    scores = {}
    for side, name in (("policy", model_dir), ("reference", base)):
        if name is None:
            continue
        model = _load(name, dtype).to(place)
        scores[side] = harness.evaluate(model, load_tokenizer(name), tasks, manager, limit, batch_size, num_fewshot)
        del model
    return harness.logged(scores.get("reference"), scores.get("policy"))


def recorded_base(folder: Path) -> Optional[str]:
    """The model a lit_dpo export was trained from, as its model card records it (None: no such card)."""
    card = folder / "README.md"
    return ModelCard.load(card).data.to_dict().get("lit_dpo_base_model") if card.is_file() else None


def _load(name_or_path: str, dtype: str) -> torch.nn.Module:
    if (Path(name_or_path) / "adapter_config.json").is_file():  # an --adapter_only export: PEFT puts it on its base
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(name_or_path, dtype=getattr(torch, dtype))
    return load_model(name_or_path, dtype)


def parser() -> ArgumentParser:
    """The command line of ``python -m lit_dpo.eval``."""
    parser = CommandParser(prog="python -m lit_dpo.eval", description=DESCRIPTION)
    parser.add_argument("model_dir", help="A Hugging Face model folder (a lit_dpo export, say).")
    parser.add_argument("--tasks", required=True, nargs="+",
                        help=f"lm-evaluation-harness task names ({OFFLINE_TASK}: lit_dpo's offline task).")  # fmt: skip
    parser.add_argument("--reference", default="auto", help="The model to compare with: 'auto' (the base model "
                        "the export's lit_dpo card names), 'none', or a model folder or Hub id.")  # fmt: skip
    parser.add_argument("--limit", type=Optional[int], default=None, help="At most this many examples per task.")
    parser.add_argument("--num_fewshot", type=Optional[int], default=None, help="Examples shown before each question.")
    parser.add_argument("--batch_size", type=int, default=8, help="Requests scored together.")
    parser.add_argument("--device", type=Optional[str], default=None, help="cpu, cuda, cuda:1 (default: cuda if any).")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16.")
    parser.add_argument("--output", type=Optional[str], default=None, help="Also write the scores to this JSON file.")
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    args = parser().parse_args(argv)
    quiet_third_party_noise()
    with user_errors():
        scores = evaluate_model(args.model_dir, args.tasks, args.reference, args.limit, args.num_fewshot,
                                args.batch_size, args.device, args.dtype)  # fmt: skip
        print(f"\nlit_dpo: general ability of {args.model_dir} (lm-evaluation-harness)")
        print(harness.table(scores))
        if args.output:
            Path(args.output).write_text(json.dumps(scores, indent=2) + "\n")
            print(f"lit_dpo: scores         {args.output}")


if __name__ == "__main__":
    main(sys.argv[1:])
