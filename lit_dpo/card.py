"""The model card (``README.md``) written with every export: Hugging Face metadata (``huggingface_hub.ModelCard``)
and a body saying how the model was trained, on what, with what result, and how to train it again."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from lit_dpo import harness
from lit_dpo.data.datamodule import demo_path
from lit_dpo.data.protocol import PreferenceData, preference_data
from lit_dpo.hf import BUNDLED, bundled_license, is_vision_language, looks_local
from lit_dpo.runs import run_directory

if TYPE_CHECKING:  # annotations only: the module imports this one
    from lit_dpo.module import DPOModule

BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the bundled GGUF was converted from
REPORT = "report.png"


@dataclass
class Run:
    """What the fit knows beyond the module's options (filled from the trainer; all optional)."""

    steps: int = 0
    pairs_seen: Optional[int] = None  # counted by ``FinishRun``
    strategy: str = "single device"
    precision: str = "32-true"
    devices: int = 1
    accumulate: int = 1
    batch: Optional[int] = None  # pairs per device per step
    metrics: dict[str, float] = field(default_factory=dict)  # the final val/ metrics, eval/ (``EvalHarness``) too
    directory: Optional[Path] = None  # the run directory: config.yaml, report.png


def run_of(trainer: Any, pairs_seen: Optional[int] = None) -> Run:
    """The ``Run`` of a Lightning trainer (None: a module outside any fit)."""
    if trainer is None:
        return Run(pairs_seen=pairs_seen)
    data = preference_data(trainer)
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "eval/"))}
    return Run(
        trainer.global_step, pairs_seen, type(trainer.strategy).__name__, str(trainer.precision), trainer.world_size,
        trainer.accumulate_grad_batches, data.batch_size if data is not None else None, final, run_directory(trainer),
    )  # fmt: skip


def checkpoint_run(checkpoint: dict[str, Any], directory: Optional[Path]) -> Run:
    """The ``Run`` a checkpoint records: its step, pairs seen (``FinishRun``'s count) and recorded settings."""
    settings = (checkpoint.get("lit_dpo") or {}).get("settings") or {}
    finish = (checkpoint.get("callbacks") or {}).get("FinishRun") or {}
    return Run(
        int(checkpoint.get("global_step", 0)), finish.get("pairs_seen"), "recorded in the checkpoint",
        settings.get("trainer.precision", "?"), settings.get("trainer.world_size", 1),
        settings.get("trainer.accumulate_grad_batches", 1), settings.get("data.batch_size"), {}, directory,
    )  # fmt: skip


def model_card(module: DPOModule, trainer: Any = None, pairs_seen: Optional[int] = None) -> ModelCard:
    """The card of ``module``'s policy as trained so far in ``trainer``'s fit."""
    return card_of(module, run_of(trainer, pairs_seen), preference_data(trainer))


def card_of(module: DPOModule, run: Run, data: Optional[PreferenceData]) -> ModelCard:
    """The card of ``module``'s policy after ``run``, trained on ``data`` (None: not at hand)."""
    hp = module.hparams
    losses = list(module.objective.names)
    base = _hub_id(hp.model_name_or_path) or Path(hp.model_name_or_path).name
    title = f"{base}, aligned with lit_dpo ({', '.join(losses)})"
    card_data = ModelCardData(
        model_name=title,
        eval_results=_eval_results(run.metrics) or None,  # the model-index the Hub shows
        base_model=_hub_id(hp.model_name_or_path),
        library_name="transformers",
        license=base_license(hp.model_name_or_path),
        tags=["dpo", "lit_dpo", "trl", *dict.fromkeys(losses)],
        datasets=_hub_datasets(data) or None,
        pipeline_tag="image-text-to-text" if is_vision_language(hp.model_name_or_path) else "text-generation",
        lit_dpo_base_model=hp.model_name_or_path,  # what ``python -m lit_dpo.eval`` compares the export with
    )
    sections = [_training(module, run), _data(data), _results(run), _reproduce(run)]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n# {title}\n\n" + "\n\n".join(s for s in sections if s) + "\n")


def card_writer(module: DPOModule, trainer: Any = None, card: Optional[ModelCard] = None) -> Callable[[Path], None]:
    """What adds the card to an export folder (``hf.export_policy``'s ``extra``): ``card``, or by default
    ``model_card(module, trainer)``, made only on the rank that writes."""
    run_dir = run_directory(trainer) if trainer is not None else None
    return lambda folder: write_card(card if card is not None else model_card(module, trainer), folder, run_dir)


def write_card(card: ModelCard, directory: Path, run_dir: Optional[Path] = None) -> None:
    """``README.md`` (the card) in ``directory``, with the run's training picture beside it when there is one."""
    card.save(directory / "README.md")
    if run_dir is not None and (run_dir / REPORT).is_file():
        shutil.copyfile(run_dir / REPORT, directory / REPORT)


def base_license(name_or_path: str) -> Optional[str]:
    """The base model's license as its own card (or the bundled GGUF) states it; None when unknown or offline."""
    if name_or_path == BUNDLED:
        return bundled_license()
    readme = Path(name_or_path) / "README.md"
    if _local(name_or_path):
        return ModelCard.load(readme).data.license if readme.is_file() else None
    try:  # a Hub id: its card, where the Hub can be reached
        return ModelCard.load(name_or_path).data.license
    except Exception:  # offline, gated, no card: the card leaves the license out rather than guess
        return None


def _eval_results(metrics: dict[str, float]) -> list[EvalResult]:
    """The policy's lm-evaluation-harness scores (``eval/policy/<task>/<metric>``) as the Hub's model-index."""
    found = [
        name.split("/")[2:] + [value] for name, value in sorted(metrics.items()) if name.startswith("eval/policy/")
    ]
    return [
        EvalResult(
            task_type="text-generation", dataset_type=task, dataset_name=task, metric_type=metric, metric_value=value
        )
        for task, metric, value in found
    ]


def _hub_id(name_or_path: str) -> Optional[str]:
    if name_or_path == BUNDLED:
        return BUNDLED_HUB_ID
    return None if _local(name_or_path) else name_or_path


def _hub_datasets(data: Optional[PreferenceData]) -> list[str]:
    if data is None:
        return []
    return list(dict.fromkeys(log.path for log in data.logs if not _local(log.path)))


def _local(name_or_path: str) -> bool:
    return looks_local(name_or_path) or Path(name_or_path).exists()


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows])


def _training(module: DPOModule, run: Run) -> str:
    hp, objective = module.hparams, module.objective
    effective = f"{run.batch} per device x {run.devices} devices x {run.accumulate} accumulation" if run.batch else "-"
    rows = [
        ("losses", ", ".join(f"{n} (weight {w:g})" for n, w in zip(objective.names, objective.weights))),
        ("beta", f"{hp.beta:g}"),
        *[
            (name, f"{objective.options[name]:g}")
            for name in sorted({n for spec in objective.specs for n in spec.options})
        ],
        ("optimizer", f"AdamW, lr {hp.learning_rate:g}, {hp.lr_schedule} after {hp.warmup_steps} warmup steps"),
        (
            "LoRA",
            f"r {hp.lora_r}, alpha {hp.lora_alpha}" + (f", base in {hp.quantization}" if hp.quantization else "")
            if hp.lora_r
            else "no",
        ),  # fmt: skip
        ("reference", hp.ref_model_name_or_path or "the base model"),
        ("optimizer steps", run.steps),
        ("pairs seen", run.pairs_seen if run.pairs_seen is not None else "-"),
        ("batch", effective),
        ("strategy, precision", f"{run.strategy}, {run.precision}, weights {hp.dtype}"),
        ("lit_dpo", _version()),
    ]
    return "## Training\n\n" + _table(("setting", "value"), rows)


def _data(data: Optional[PreferenceData]) -> str:
    if data is None or not data.logs:
        return ""
    rows = [
        (log.name, _shown(log.path), log.stage, log.rows, log.kept, log.sampled if log.stage == "train" else "-")
        for log in data.logs
    ]
    return "## Data\n\n" + _table(("source", "path", "stage", "rows read", "rows kept", "in the training set"), rows)


def _shown(path: str) -> str:
    """A source's path as the card shows it: the demo pairs by name, not by where lit_dpo is installed."""
    return "lit_dpo's demo pairs" if path in (demo_path("train"), demo_path("val")) else path


def _results(run: Run) -> str:
    parts = []
    rows = [(name, f"{value:.4f}") for name, value in sorted(run.metrics.items()) if name.startswith("val/")]
    if rows:
        parts.append(f"## Final validation (step {run.steps})\n\n" + _table(("metric", "value"), rows))
    general = harness.table(run.metrics)
    if general:
        parts.append(
            "## General ability (lm-evaluation-harness)\n\nThe reference is the model before DPO; the delta is the "
            "policy's score minus the reference's.\n\n" + general
        )
    if run.directory is not None and (run.directory / REPORT).is_file():
        parts.append(f"## Training picture\n\n![training report]({REPORT})")
    return "\n\n".join(parts)


def _reproduce(run: Run) -> str:
    config = run.directory / "config.yaml" if run.directory is not None else None
    if config is None or not config.is_file():
        return ""
    return (
        f"## Reproduce\n\nWith lit_dpo {_version()} installed:\n\n```bash\npython -m lit_dpo.fit --config config.yaml\n```\n\n"
        f"with this `config.yaml`:\n\n```yaml\n{config.read_text().rstrip()}\n```"
    )


def _version() -> str:
    import lit_dpo  # at call time: lit_dpo's __init__ imports this module

    return lit_dpo.__version__
