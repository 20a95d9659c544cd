"""lit_dpo: Direct Preference Optimization as a PyTorch Lightning module and recipes.

The library behind ``python -m lit_dpo.fit``, for a plain Lightning program::

    import lightning as L
    from lit_dpo import DPOModule, PreferenceDataModule
    from lit_dpo.callbacks import FinishRun

    model = DPOModule(model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct", beta=0.1)
    data = PreferenceDataModule(path="pairs.jsonl", batch_size=4)  # the tokenizer: the model's
    L.Trainer(max_steps=40, callbacks=[FinishRun()]).fit(model, datamodule=data)
"""

import logging

# PEFT imports bitsandbytes (QLoRA, lit_dpo.quantize), whose CPU backend warns at import, on every start, that an
# optional kernel it would fetch from the Hub is missing; 4-bit training works without it
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from lit_dpo.data import OnlineDataModule, PreferenceDataModule  # noqa: E402
from lit_dpo.data.protocol import PreferenceData  # noqa: E402
from lit_dpo.losses import LOSSES  # noqa: E402
from lit_dpo.module import DPOModule  # noqa: E402

__version__ = "0.1.0"

__all__ = ["LOSSES", "DPOModule", "OnlineDataModule", "PreferenceData", "PreferenceDataModule", "__version__"]
