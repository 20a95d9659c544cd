"""The frozen reference behind one interface, ``Reference``: ``logps(batch)`` gives a batch's reference log-probs,
``sync(policy, alpha)`` moves it towards the policy (TR-DPO). Three kinds:

- ``ModelReference`` (``live``): a frozen model, run next to the policy;
- ``AdapterReference`` (``live``): the LoRA policy's base with adapters disabled;
- ``CachedReference`` (``cached``): log-probs computed in one pass before training and kept on disk.

``check_start`` checks, at step 0, that a reference starting as the policy scores pairs as the policy does.
"""

from lit_dpo.reference.cached import CachedReference, cache_logps, cache_stages, should_cache, weights_fingerprint
from lit_dpo.reference.live import AdapterReference, ModelReference, Reference
from lit_dpo.reference.start import check_start

__all__ = [
    "AdapterReference",
    "CachedReference",
    "ModelReference",
    "Reference",
    "cache_logps",
    "cache_stages",
    "check_start",
    "should_cache",
    "weights_fingerprint",
]
