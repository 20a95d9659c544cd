"""Per-device memory of a DPO fit, part by part, from a ``ModelShape``, the traced activations and the run's
settings (``Setup``): arithmetic only, so that the alternatives ``lit_dpo.plan`` suggests cost nothing to try.

The peak is the steady-state training step (optimizer state allocated, step 2 on): weights, optimizer state and
what the strategy adds stay; within the step come the forward's saved activations, the LM head's logits (or the
reference's forward over them) and, since Lightning zeroes gradients only between the forward and the backward,
the previous step's gradients (none when the optimizer steps in the backward: each is freed as it is applied).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Optional

from lit_dpo.data.packing import pack_rows
from lit_dpo.planning.shape import LayerActivations, ModelShape
from lit_dpo.scoring.lm_head import worth_chunking

Strategy = Literal["single", "ddp", "fsdp"]
ReferenceKind = Literal["live", "cached", "adapter", "none"]


@dataclass(frozen=True)
class Layout:
    """The rows of the largest micro-batch: ``rows`` of ``length`` tokens, ``scored`` of them completion tokens."""

    rows: int
    length: int
    scored: int

    @property
    def tokens(self) -> int:
        return self.rows * self.length


def layout(batch_size: int, prompt: int, completion: int, shared_prefix: bool, pack_length: int) -> Layout:
    """Rows as lit_dpo's collators make them (``lit_dpo.data.collate``): ``2B`` padded rows of prompt + completion,
    or rows of prompt, chosen, rejected, packed as ``pack_rows`` packs them (``pack_length`` 0: a pair a row)."""
    scored = 2 * batch_size * completion
    if not shared_prefix:
        return Layout(2 * batch_size, prompt + completion, scored)
    pair = prompt + 2 * completion
    rows = pack_rows([pair] * batch_size, pack_length)
    return Layout(len(rows), max(len(row) for row in rows) * pair, scored)


@dataclass(frozen=True)
class Setup:
    """What decides a fit's memory, per device."""

    shape: ModelShape
    layer: LayerActivations  # one decoder layer's saved activations (``layer_activations``)
    outside: LayerActivations  # the rest of the forward's (embeddings, final norm)
    batch_size: int  # pairs per device per step
    prompt_tokens: int
    completion_tokens: int
    shared_prefix: bool
    pack_length: int
    param_bytes: int  # 4 for float32 weights, 2 for bfloat16/float16
    strategy: Strategy = "single"
    world_size: int = 1
    shard_size: int = 1  # FSDP: processes a model is sharded over (all, or a node's under HSDP)
    reference: ReferenceKind = "live"
    lora: bool = False
    activation_checkpointing: bool = False
    optimizer_in_backward: bool = False
    chunk_positions: Optional[int] = None  # scored positions per LM-head chunk; None: the whole (M, V) at once
    half_logits: bool = False  # the head computes in half precision (half weights or autocast)
    pass_batch_size: Optional[int] = None  # pairs per batch of the cached reference's pass (the validation batch)
    # the reference maps the policy's own weights file (one CPU process, stored dtype): one copy until an update
    shares_weights_file: bool = False

    @property
    def chunks_logits(self) -> bool:
        """Whether the LM head works in chunks (``lit_dpo.scoring.lm_head.chunks_logits``) on a training step."""
        return self.chunks(self.rows)

    def chunks(self, rows: Layout) -> bool:
        return self.chunk_positions is not None and worth_chunking(rows.scored, self.chunk_positions)

    @property
    def rows(self) -> Layout:
        return layout(self.batch_size, self.prompt_tokens, self.completion_tokens, self.shared_prefix, self.pack_length)

    @property
    def pass_pairs(self) -> int:
        """Pairs per batch of the cached reference's pass."""
        return self.pass_batch_size or self.batch_size

    @property
    def pass_rows(self) -> Layout:
        """A batch of the cached reference's pass."""
        return layout(self.pass_pairs, self.prompt_tokens, self.completion_tokens, self.shared_prefix, self.pack_length)


@dataclass(frozen=True)
class Plan:
    """Bytes per device of each part of a fit (``estimate``); ``peak`` is what must fit."""

    weights: float
    gradients: float
    optimizer: float
    reference: float
    activations: float
    logits: float
    strategy: float  # FSDP's gathered layers and root; DDP's gradient buckets
    reference_pass: float  # the cached reference's one pass before training (policy + reference, no gradients)
    # Lightning zeroes gradients after the forward, before the backward: the previous step's live through the
    # forward, unless the optimizer stepped (and freed them) in the backward
    stale_gradients: bool = True

    @property
    def step(self) -> float:
        """What the forward and backward add on top of the resident parts."""
        return self.activations + self.logits + (self.gradients if self.stale_gradients else 0.0)

    @property
    def peak(self) -> float:
        return max(self.weights + self.optimizer + self.reference + self.strategy + self.step, self.reference_pass)


def estimate(setup: Setup) -> Plan:
    s, shape = setup, setup.shape
    shard = s.shard_size if s.strategy == "fsdp" else 1
    trainable = shape.lora_params if s.lora else shape.params
    weights = (shape.params + (shape.lora_params if s.lora else 0)) * s.param_bytes / shard
    gradients = trainable * s.param_bytes / shard
    if s.optimizer_in_backward:  # each gradient is applied and freed as soon as it is complete
        gradients = min(trainable, shape.largest_tensor) * s.param_bytes
    optimizer = 2 * trainable * s.param_bytes / shard  # AdamW's two moments, in the weights' dtype
    reference = shape.params * s.param_bytes / shard if s.reference == "live" else 0.0
    acts = activations(s)
    logits = logit_bytes(s)
    if s.reference in ("live", "adapter"):  # its forward runs after the policy's, whose activations and fp32
        # logits (none in chunks) are kept for the backward: a layer's worth and the head's peak on top
        kept = 0 if s.chunks_logits else s.rows.scored * s.shape.vocab_size * 4
        logits += kept + s.layer.bytes(s.rows.rows, s.rows.length)
    strategy = 0.0
    if s.strategy == "fsdp":  # the root unit stays gathered through forward and backward; a layer is prefetched
        strategy = (shape.root_params * (1 - 1 / shard) + 2 * shape.layer_params) * s.param_bytes
    elif s.strategy == "ddp" and s.world_size > 1:  # DDP's gradient buckets: a second copy of the gradients
        strategy = trainable * s.param_bytes
    reference_pass = 0.0
    if s.reference == "cached":  # before training, policy and reference both held (and AdamW's moments, where
        # allocated up front) while the reference scores every pair once, without gradients
        held = (1 if s.shares_weights_file else 2) * weights + (optimizer if s.optimizer_in_backward else 0.0)
        reference_pass = held + s.layer.bytes(s.pass_rows.rows, s.pass_rows.length) + logit_bytes(s, s.pass_rows)
    stale = not s.optimizer_in_backward
    return Plan(weights, gradients, optimizer, reference, acts, logits, strategy, reference_pass, stale)


def activations(s: Setup) -> float:
    """Saved activations of the policy's forward: every layer's, or with activation checkpointing each layer's
    input plus one layer recomputed at a time in the backward."""
    rows, length = s.rows.rows, s.rows.length
    outside = s.outside.bytes(rows, length)
    if not s.activation_checkpointing:
        return s.shape.num_layers * s.layer.bytes(rows, length) + outside
    # the residual stream between layers stays in the weights' dtype, autocast or not
    inputs = s.shape.num_layers * s.rows.tokens * s.shape.hidden_size * s.param_bytes
    return inputs + s.layer.bytes(rows, length) + outside


def logit_bytes(s: Setup, rows: Optional[Layout] = None) -> float:
    """The LM head's peak over the scored positions, all at once or a chunk's (``lit_dpo.scoring.lm_head``): the
    logits, their fp32 copy when the head computes in half precision, and one more fp32 tensor of their size
    (logsumexp's temporary in the forward, their gradient in the backward; a forward without gradients peaks
    the same way). ``rows``: a training step's unless given."""
    rows = rows or s.rows
    positions = s.chunk_positions if s.chunks(rows) else rows.scored
    per_logit = 4 + 4 + (2 if s.half_logits else 0)  # fp32: half-precision logsumexp loses digits
    return positions * s.shape.vocab_size * per_logit


@dataclass(frozen=True)
class Variant:
    """The plan of the setup with one thing changed: ``option`` is how to ask for it (empty: lit_dpo decides)."""

    part: str  # what changes: activations, reference, logits, rows, strategy, batch
    label: str
    option: str
    plan: Plan
    current: bool


def variants(setup: Setup) -> list[Variant]:
    """The plan under each choice that moves the peak: activation checkpointing, the reference, the logits, the
    rows' layout, the strategy, the batch size; the setup's own choice marked ``current``."""
    s = setup
    found: list[Variant] = []

    def add(part: str, label: str, option: str, changed: Setup) -> None:
        found.append(Variant(part, label, option, estimate(changed), changed == s))

    for on in (False, True):
        add("activations", f"activation checkpointing {'on' if on else 'off'}",
            f"--model.activation_checkpointing={str(on).lower()}", replace(s, activation_checkpointing=on))  # fmt: skip
    if s.reference != "none":
        add("reference", "live reference model", "--model.precompute_ref_log_probs=false",
            replace(s, reference="live", lora=False))  # fmt: skip
        add("reference", "cached reference log-probs", "--model.precompute_ref_log_probs=true",
            replace(s, reference="cached", lora=False))  # fmt: skip
        add(
            "reference",
            "LoRA (the base is the reference)",
            "--model.lora_r=16",
            replace(s, reference="adapter", lora=True),
        )
    if s.chunks_logits:
        add("logits", "LM head in chunks (lit_dpo's, for this model)", "", s)
        add("logits", "all logits at once (TRL's)", "", replace(s, chunk_positions=None))
    # the other layout, with this layout's traced layer (a padding mask saves a little less than a 4D one)
    for shared in (True, False):
        label = "prefix-shared rows" if shared else "padded rows (TRL's)"
        add("rows", label, f"--data.prefix_sharing={str(shared).lower()}", replace(s, shared_prefix=shared))
    if s.world_size > 1:
        add("strategy", "DDP", "--config recipes/strategy/ddp.yaml", replace(s, strategy="ddp", shard_size=1))
        add("strategy", "FSDP2", "--config recipes/strategy/fsdp.yaml",
            replace(s, strategy="fsdp", shard_size=s.shard_size if s.strategy == "fsdp" else s.world_size))  # fmt: skip
    if s.batch_size > 1:
        half = s.batch_size // 2
        add(
            "batch",
            "half the pairs per step, twice the accumulation",
            f"--data.batch_size={half}",
            replace(s, batch_size=half),
        )
    return found
