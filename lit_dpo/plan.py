"""``python -m lit_dpo.plan``: will the fit fit? Per-device memory of a fit with the same options, before the job
starts: the model is built on the meta device (only its ``config.json`` is read) and one decoder layer's
activations are traced on the CPU (``lit_dpo.planning``); nothing is trained, no data is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.cli import LightningArgumentParser
from rich.console import Console
from rich.table import Table

from lit_dpo.cli import DPOCLI, user_errors
from lit_dpo.planning.estimate import Plan, Setup, estimate, variants
from lit_dpo.planning.setup import Hardware, build_setup, lengths

GIB = 2**30
# what a plan may use of a device's memory: the rest is for the allocator's fragmentation and the runtime (a CUDA
# context, kernels' workspaces), which the plan does not itemise
HEADROOM = 0.9
PARTS = ("weights", "gradients", "optimizer", "reference", "activations", "logits", "strategy")


class PlanCLI(DPOCLI):
    """The fit's command line, plus the plan's own options; the options are checked, nothing is loaded."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--memory_gb", type=Optional[float], default=None,
                            help="Memory per device in GiB (default: this machine's GPU, or its RAM per process).")  # fmt: skip
        parser.add_argument("--prompt_tokens", type=Optional[int], default=None,
                            help="Prompt length to plan for (default: --data.max_prompt_length, else half of max_length).")  # fmt: skip
        parser.add_argument("--completion_tokens", type=Optional[int], default=None,
                            help="Completion length to plan for (default: the rest of --data.max_length).")  # fmt: skip
        parser.add_argument("--output", type=Optional[str], default=None, help="Also write the plan as JSON here.")

    def instantiate_classes(self) -> None:
        # the model module checks its options (and builds the objective); the data module its own; no trainer
        self.config_init = self.parser.instantiate(self.config)
        self.model, self.datamodule = self.config_init.model, self.config_init.data


def main(args: Optional[list[str]] = None) -> None:
    with user_errors():
        cli = PlanCLI(args, command="plan")
        config = cli.config
        pair = lengths(config.data.init_args.as_dict(), config.prompt_tokens, config.completion_tokens)
        setup, hw = build_setup(
            config.model.as_dict(), config.data.init_args.as_dict(), config.trainer.as_dict(), cli.model.objective,
            pair, online=cli.datamodule.online,
        )  # fmt: skip
        memory = config.memory_gb * GIB if config.memory_gb else device_memory(hw)
        console = Console()
        show(console, config.model.model_name_or_path, setup, hw, memory)
        if config.output:
            Path(config.output).write_text(json.dumps(as_json(setup, hw, memory), indent=2) + "\n")
            console.print(f"lit_dpo: plan written to {config.output}")


def fits(peak: float, memory: float) -> bool:
    return peak <= HEADROOM * memory


def device_memory(hw: Hardware) -> float:
    """Memory of one device: the first GPU's, or the machine's RAM shared by its processes."""
    if hw.accelerator == "gpu" and torch.cuda.is_available():
        return float(torch.cuda.get_device_properties(0).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / hw.devices


def show(console: Console, model: str, setup: Setup, hw: Hardware, memory: float) -> None:
    """The plan as a terminal reads it: what is planned, the parts, the choices, the compute."""
    s, plan, rows = setup, estimate(setup), setup.rows
    where = f"{hw.strategy.upper() if hw.strategy != 'single' else 'one process'}"
    if hw.world_size > 1:
        where += f" over {hw.world_size} processes" + (f" ({hw.nodes} nodes)" if hw.nodes > 1 else "")
    console.print(f"lit_dpo plan: {model} ({s.shape.architecture}, {_count(s.shape.params)} parameters, "
                  f"{s.shape.num_layers} layers), {where}, {hw.accelerator.upper()}, per device")  # fmt: skip
    layout = "prefix-shared" if s.shared_prefix else "padded"
    console.print(f"step: {s.batch_size} pairs of {s.prompt_tokens} prompt + {s.completion_tokens} completion tokens "
                  f"-> {layout} rows: {rows.rows} x {rows.length} tokens ({rows.scored} scored)")  # fmt: skip
    console.print(_parts(s, plan, memory))
    console.print(_choices(s, memory))
    # forward 2 FLOPs per parameter and token, backward 4 (2 with LoRA: no weight gradients for the base)
    flops = (2 + (2 if s.lora else 4)) * s.shape.params * rows.tokens
    flops += 2 * s.shape.params * rows.tokens if s.reference in ("live", "adapter") else 0  # the reference's forward
    console.print(f"compute: ~{flops / 1e12:.1f} TFLOP per micro-batch per device; the plan sizes the longest pairs "
                  "the options allow (--prompt_tokens, --completion_tokens: others)")  # fmt: skip


def _parts(s: Setup, plan: Plan, memory: float) -> Table:
    table = Table("part", "GiB", "what", box=None)
    for part in PARTS:
        table.add_row(part, f"{getattr(plan, part) / GIB:.2f}", _what(part, s))
    if plan.reference_pass:
        table.add_row(
            "(reference pass)", f"{plan.reference_pass / GIB:.2f}",
            f"before training: both models, {s.pass_pairs} pairs a batch, no gradients",
        )  # fmt: skip
    tight = "tight: under 10% to spare" if plan.peak <= memory else "does NOT fit"
    verdict = "fits" if fits(plan.peak, memory) else tight
    table.add_row("peak", f"{plan.peak / GIB:.2f}", f"of {memory / GIB:.1f} GiB: {verdict}", style="bold")
    return table


def _choices(s: Setup, memory: float) -> Table:
    table = Table("part", "choice", "peak GiB", "", box=None, title="choices that move the peak", title_justify="left")
    for v in variants(s):
        mark = "(now)" if v.current else ("fits" if fits(v.plan.peak, memory) else "too big")
        table.add_row(v.part, v.label if v.current or not v.option else v.option, f"{v.plan.peak / GIB:.2f}", mark)
    return table


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _what(part: str, s: Setup) -> str:
    dtype = {4: "fp32", 2: "16-bit"}[s.param_bytes]
    trainable = "LoRA adapters" if s.lora else "every weight"
    return {
        "weights": f"policy in {dtype}" + (f", sharded over {s.shard_size}" if s.strategy == "fsdp" else ""),
        "gradients": "one tensor at a time (optimizer in backward)"
        if s.optimizer_in_backward
        else f"{trainable}: the last step's, until the backward",
        "optimizer": f"AdamW moments of {trainable}",
        "reference": {
            "live": "a second frozen model",
            "cached": "log-probs cached before training",
            "adapter": "the LoRA base (adapters off)",
            "none": "reference-free loss",
        }[s.reference],  # fmt: skip
        "activations": "kept for the backward" + (", layers checkpointed" if s.activation_checkpointing else ""),
        "logits": "LM head in chunks" if s.chunks_logits else "the scored positions' logits at once",
        "strategy": {"fsdp": "gathered root and layers", "ddp": "gradient buckets", "single": ""}[s.strategy],
    }[part]


def as_json(setup: Setup, hw: Hardware, memory: float) -> dict[str, Any]:
    plan: Plan = estimate(setup)
    return {
        "parts": {**asdict(plan), "peak": plan.peak},
        "memory": memory,
        "fits": fits(plan.peak, memory),
        "hardware": asdict(hw),
        "rows": asdict(setup.rows),
        "variants": [
            {"part": v.part, "label": v.label, "option": v.option, "peak": v.plan.peak, "current": v.current}
            for v in variants(setup)
        ],  # fmt: skip
    }


if __name__ == "__main__":
    main()
