"""Memory plans of DPO fits (``python -m lit_dpo.plan``): ``shape`` reads a model's counts and traces its
activations, ``setup`` turns a fit's options into a ``Setup``, ``estimate`` gives the bytes per device by part."""

from lit_dpo.planning.estimate import Plan, Setup, Variant, estimate, variants
from lit_dpo.planning.setup import build_setup

__all__ = ["Plan", "Setup", "Variant", "build_setup", "estimate", "variants"]
