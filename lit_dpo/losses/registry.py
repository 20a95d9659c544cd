"""Every loss by name (``LOSSES``), and ``Objective``: one loss, or a weighted sum of several, with its options.

Adding a loss is one function (``fn(lp, beta, **options) -> LossOutput``) and one entry below; the spec says
what it needs, and every caller asks the ``Objective`` built from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

from lit_dpo.errors import InputError
from lit_dpo.losses import absolute, dpo, reference_free, unpaired
from lit_dpo.losses.common import Between, LossOutput, LossSpec
from lit_dpo.scoring.logps import Logps

_FLIP = Between(0.0, 0.5, high_inclusive=True)  # label_smoothing as a probability that labels are flipped

LOSSES: dict[str, LossSpec] = {
    "sigmoid": LossSpec(dpo.sigmoid_loss),
    "robust": LossSpec(dpo.robust_loss, limits={"label_smoothing": Between(0.0, 0.5)}),
    "hinge": LossSpec(dpo.hinge_loss),
    "ipo": LossSpec(dpo.ipo_loss),
    "sigmoid_norm": LossSpec(dpo.sigmoid_norm_loss),
    "exo_pair": LossSpec(
        dpo.exo_pair_loss,
        limits={"label_smoothing": Between(0.0, 1.0, low_inclusive=False, hint="the paper uses 1e-3")},
    ),
    "nca_pair": LossSpec(absolute.nca_pair_loss),
    "bco_pair": LossSpec(absolute.bco_pair_loss),
    "sppo_hard": LossSpec(absolute.sppo_hard_loss),
    "aot": LossSpec(dpo.aot_loss, limits={"label_smoothing": _FLIP}),
    "aot_unpaired": LossSpec(dpo.aot_unpaired_loss, limits={"label_smoothing": _FLIP}),
    "apo_zero": LossSpec(absolute.apo_zero_loss),
    "apo_down": LossSpec(absolute.apo_down_loss),
    "discopop": LossSpec(dpo.discopop_loss),
    "sft": LossSpec(reference_free.sft_loss, reference="rewards"),
    "simpo": LossSpec(reference_free.simpo_loss, reference="free", limits={"label_smoothing": _FLIP}),
    "orpo": LossSpec(reference_free.orpo_loss, reference="free", scores_prompt=True),
    "kto": LossSpec(unpaired.kto_loss, unpaired=True),
    "apo_zero_unpaired": LossSpec(unpaired.apo_zero_unpaired_loss, unpaired=True),
}
# every option some loss reads: the DPOModule arguments of the same names set them
OPTIONS = sorted({name for spec in LOSSES.values() for name in spec.options})


@dataclass(frozen=True)
class Objective:
    """The training objective: ``objective(lp, beta)`` sums the named losses with their weights; the rewards
    are those of the first. It says what the losses need: a reference, the prompts' scores, unpaired rows, and
    how log-probs are weighed (``ld_alpha``, LD-DPO) and losses re-weighted (``use_weighting``, WPO)."""

    names: tuple[str, ...]
    weights: tuple[float, ...]
    options: dict[str, float] = field(default_factory=dict)
    use_weighting: bool = False
    ld_alpha: Optional[float] = None

    @property
    def specs(self) -> list[LossSpec]:
        return [LOSSES[name] for name in self.names]

    @property
    def needs_reference(self) -> bool:
        """Whether a reference is loaded: some loss reads it, or none is reference-free (sft reports rewards)."""
        kinds = {spec.reference for spec in self.specs}
        return "needed" in kinds or "free" not in kinds

    @property
    def scores_prompt(self) -> bool:
        return any(spec.scores_prompt for spec in self.specs)

    @property
    def unpaired(self) -> bool:
        return any(spec.unpaired for spec in self.specs)

    def check_rows(self, unpaired: bool) -> None:
        """Refuse rows of the other form: pairs for unpaired losses, or unpaired rows for the others."""
        if unpaired != self.unpaired:
            raise InputError(
                "loss_type kto / apo_zero_unpaired need unpaired rows (prompt, completion, label), and unpaired rows "
                f"need one of them; got loss_type={','.join(self.names)} with {'un' if unpaired else ''}paired rows"
            )

    def __call__(self, lp: Logps, beta: float) -> LossOutput:
        outputs = [spec.fn(lp, beta, **self._options_of(spec)) for spec in self.specs]
        losses = outputs[0].losses
        if self.weights != (1.0,):
            losses = sum(w * out.losses for out, w in zip(outputs, self.weights))
        if self.use_weighting:
            losses = losses * lp.wpo_weights  # type: ignore[union-attr]
        return LossOutput(losses, *outputs[0][1:])

    def _options_of(self, spec: LossSpec) -> dict[str, float]:
        return {name: self.options.get(name, default) for name, default in spec.options.items()}


def build_objective(
    loss_type: Union[str, Sequence[str]],
    loss_weights: Optional[Sequence[float]] = None,
    use_weighting: bool = False,
    ld_alpha: Optional[float] = None,
    label_smoothing: float = 0.0,
    **options: float,
) -> Objective:
    """The objective for ``loss_type`` (a name or a list), refusing what a chosen loss would silently ignore, or
    a value it cannot take, with ``InputError``. ``options`` are the other loss options (``OPTIONS``)."""
    names = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    weights = [1.0] * len(names) if loss_weights is None else [float(w) for w in loss_weights]
    if not names or len(weights) != len(names):
        raise InputError(f"loss_weights needs one weight per loss_type: got {weights} for {names}")
    options = {**options, "label_smoothing": label_smoothing}
    for name in names:
        _check(name, options)
    objective = Objective(tuple(names), tuple(weights), options, use_weighting, ld_alpha)
    if objective.unpaired and len(names) > 1:
        chosen = sorted(name for name in names if LOSSES[name].unpaired)
        raise InputError(f"{chosen} work on unpaired rows and cannot be combined: {names}")
    if objective.unpaired and (use_weighting or ld_alpha is not None):
        raise InputError(f"use_weighting and ld_alpha weigh the two completions of a pair; {names} take unpaired rows")
    if label_smoothing and not any("label_smoothing" in spec.options for spec in objective.specs):
        users = sorted(name for name, spec in LOSSES.items() if "label_smoothing" in spec.options)
        raise InputError(
            f"label_smoothing={label_smoothing} has no effect with loss_type={','.join(names)!r}; "
            f"it is used by {users} (TRL's convention: cDPO is loss_type='robust')"
        )
    return objective


def _check(name: str, options: dict[str, float]) -> None:
    if name not in LOSSES:
        raise InputError(f"unknown loss_type {name!r}; choose one of {sorted(LOSSES)}")
    for option, allowed in LOSSES[name].limits.items():
        value = options.get(option, LOSSES[name].options[option])
        if value not in allowed:
            raise InputError(f"loss_type={name!r} needs {allowed.describe(option)}, got {value}")
