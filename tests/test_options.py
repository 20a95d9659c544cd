"""``DPOOptions``: the ``--model.*`` signature that ``DPOModule`` inherits, one documented line per option."""

import inspect
import re

from lit_dpo import DPOModule
from lit_dpo.options import DPOOptions


def test_the_module_takes_and_shows_the_options():
    """``DPOModule(...)`` takes exactly the options, by name or position, and shows them (help(), notebooks)."""
    assert inspect.signature(DPOModule) == inspect.signature(DPOOptions)
    module = DPOModule("bundled:SmolLM2-135M-Instruct", None, "ipo", beta=0.3)
    assert set(module.hparams) == set(inspect.signature(DPOOptions).parameters)
    assert (module.hparams.loss_type, module.hparams.beta, module.hparams.lora_r) == ("ipo", 0.3, 0)


def test_every_option_has_one_typed_line_of_documentation():
    documented = dict(re.findall(r"^        (\w+): (.+)$", DPOOptions.__doc__, flags=re.M))
    for name, parameter in inspect.signature(DPOOptions).parameters.items():
        assert name in documented, name
        assert parameter.annotation is not inspect.Parameter.empty, name
