"""Resume only into the same job: a checkpoint records what the run trains on (the data and reference
fingerprints) and with which settings (``run_settings``); ``check_resume`` refuses a resume where any differ, unless
``--allow_changed`` names them. ``max_steps`` and ``max_epochs`` are free: raising them trains longer."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Optional

from lit_dpo.errors import InputError

if TYPE_CHECKING:  # annotations only: data modules import what imports this module
    from lit_dpo.data.protocol import PreferenceData

# DPOModule options that change neither the numbers nor the schedule (speed, memory, how the reference is computed),
# and the models' paths: the policy's weights come from the checkpoint, and the reference's and the data's
# fingerprints tell whether what those paths hold changed (a moved folder is the same job)
FREE_MODEL_OPTIONS = {"allow_changed", "compile", "attn_implementation", "activation_checkpointing", "optimizer_in_backward",
                      "precompute_ref_log_probs", "trust_remote_code", "model_name_or_path", "ref_model_name_or_path"}  # fmt: skip

# the data module's options that shape training (``PreferenceData.training_settings``)
DATA_SETTINGS = ("batch_size", "max_length", "max_prompt_length", "truncation", "shuffle")

_CHANGES = {  # what a checkpoint's fingerprint covers, and what resuming on a changed one would do
    "data": (
        "the training data (rows, order, tokenizer or length limits)",
        "would change the sample order and schedule",
    ),
    "reference": ("the reference model's weights", "would change the objective the run optimises"),
}


def run_settings(model_options: Mapping[str, Any], data_settings: Mapping[str, Any], trainer: Any) -> dict[str, Any]:
    """The settings a resumed run must share with its checkpoint, by their command-line names: the model's options
    (loss types and their options, beta, optimizer and schedule, LoRA, dtype), the data's (batch size, length
    limits), and the run's (world size, gradient accumulation, clipping, precision, seed)."""
    settings = {f"model.{k}": v for k, v in model_options.items() if k not in FREE_MODEL_OPTIONS}
    settings |= {f"data.{k}": v for k, v in data_settings.items()}
    settings |= {
        "trainer.world_size": trainer.world_size,
        "trainer.accumulate_grad_batches": trainer.accumulate_grad_batches,
        "trainer.gradient_clip_val": trainer.gradient_clip_val,
        "trainer.precision": str(trainer.precision),
        "seed_everything": int(os.environ.get("PL_GLOBAL_SEED", 0)),
    }
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def fingerprints(
    model_options: Mapping[str, Any], data: Optional[PreferenceData], reference: Optional[str], trainer: Any
) -> dict[str, Any]:
    """What a checkpoint records so that a resumed run can check it is the same job: the data's and the reference
    weights' fingerprints, and the run's settings (``run_settings``; None outside a fit)."""
    data_settings = data.training_settings() if data is not None else {}
    return {
        "data": data.fingerprint() if data is not None else None,
        "reference": reference,
        "settings": run_settings(model_options, data_settings, trainer) if trainer is not None else None,
    }


def settings_from_config(model: Mapping[str, Any], data: Mapping[str, Any], seed: Any) -> dict[str, Any]:
    """The settings a command line asks for, as ``run_settings`` records them (those known before anything loads:
    not the world size), to pick a run to resume (``checkpoints.find_resumable``)."""
    settings = {f"model.{k}": v for k, v in model.items() if k not in FREE_MODEL_OPTIONS}
    settings |= {f"data.{k}": data[k] for k in DATA_SETTINGS if k in data}
    if isinstance(seed, int) and not isinstance(seed, bool):
        settings["seed_everything"] = seed
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def differences(recorded: Mapping[str, Any], wanted: Mapping[str, Any], allowed: set[str]) -> dict[str, tuple]:
    """``{setting: (recorded, wanted)}`` for each setting both know and that differs, but those ``allowed``."""
    return {
        k: (recorded[k], wanted[k]) for k in recorded if k in wanted and recorded[k] != wanted[k] and k not in allowed
    }


def listed(changes: Mapping[str, tuple]) -> str:
    return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())


def check_resume(saved: Mapping[str, Any], current: Mapping[str, Any], allowed: set[str], checkpoint: str) -> None:
    """Refuse to resume a fit from ``checkpoint`` when the training data, the reference or a setting differs from
    what it recorded (``saved``, its ``checkpoint["lit_dpo"]``), unless ``allowed`` (``--allow_changed``) names it."""
    for what in _CHANGES:
        before, now = saved.get(what), current.get(what)
        if before is not None and now is not None and before != now and what not in allowed:
            described, consequence = _CHANGES[what]
            raise InputError(
                f"{described} changed since {checkpoint} was saved (fingerprint {before[:12]} -> {now[:12]}): "
                f"resuming {consequence}; pass --allow_changed='[{what}]' to resume anyway"
            )
    recorded, settings = saved.get("settings") or {}, current.get("settings") or {}
    changed = differences(recorded, {k: settings.get(k) for k in recorded}, allowed)
    unknown = allowed - set(_CHANGES) - set(recorded)
    if unknown:
        raise InputError(f"--allow_changed names {sorted(unknown)}, which {checkpoint} does not record; it records "
                         f"data, reference and {', '.join(sorted(recorded))}")  # fmt: skip
    if changed:
        raise InputError(
            f"{checkpoint} was saved with other settings: {listed(changed)}; resuming would not continue the same job. "
            f"Resume with the recorded settings, or pass --allow_changed='[{', '.join(changed)}]' to resume anyway"
        )
