"""Shared fixtures: a tiny random Llama with a tokenizer trained on the fly, rows, files and batches built from them,
one module step, and test-only oracles. Tests take what they need as fixtures; nothing here is imported by them.

(``make_tokenizer`` and ``make_model`` are plain functions too, for ``benchmarks/vs_trl.py --tiny``.)
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = "the a cat dog sat ran on mat big small red blue yes no is it what why answer question good bad".split()


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (~300 tokens) with ChatML special tokens and template."""
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(12)) + " 0123456789 .,!?" for _ in range(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>", bos_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    return fast


def make_model(vocab_size: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def _standard_rows(n: int, seed: int = 0) -> list[dict]:
    """Pairs with a simple rule: the chosen answer says 'yes', the rejected one 'no' and rambles."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = "what is " + " ".join(rng.choice(WORDS[:12]) for _ in range(rng.randint(2, 6))) + "?"
        chosen = " yes it is " + rng.choice(WORDS[:12])
        rejected = " no " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def _chat_rows(n: int, seed: int = 0) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"].strip()}],
            "rejected": [{"role": "assistant", "content": r["rejected"].strip()}],
        }
        for r in _standard_rows(n, seed)
    ]


def _write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


def make_vlm(seed: int = 0, hidden: int = 32, layers: int = 2, tile: int = 32, patch: int = 8) -> tuple[Any, Any]:
    """A random Idefics3 (SmolVLM's architecture: a SigLIP-like vision tower, pixel shuffle, a Llama) and its
    processor, assembled from the test tokenizer and the PIL image processor: images split into ``tile``-pixel
    tiles (up to 2 x 2, and a global one), each ``(tile / patch)^2 / 4`` image tokens."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3 import Idefics3ImageProcessorPil

    tokenizer = make_tokenizer()
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]}
    )
    images = Idefics3ImageProcessorPil(size={"longest_edge": 2 * tile}, max_image_size={"longest_edge": tile})
    template = (  # ChatML, image parts as the processor's image token
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    per_tile = (tile // patch) ** 2 // 4
    processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=per_tile,
                                  chat_template=template)  # fmt: skip
    torch.manual_seed(seed)
    heads = max(2, hidden // 64)
    config = Idefics3Config(
        vision_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=tile, patch_size=patch),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads),
        scale_factor=2, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    return Idefics3ForConditionalGeneration._from_config(config, attn_implementation="sdpa").eval(), processor


def make_qwen_vlm(
    seed: int = 0, hidden: int = 32, layers: int = 2, patch: int = 8, version: str = "2", side: int = 64
) -> tuple[Any, Any]:
    """A random Qwen2-VL (``version`` "2.5": Qwen2.5-VL, windowed vision attention) and its processor, assembled
    from the test tokenizer and the PIL image processor: images resized to multiples of ``2 * patch`` pixels, up to
    ``side`` x ``side``, each ``(side / patch / 2)^2`` image tokens. Multimodal rope; every image's patches in one
    sequence."""
    import transformers
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    name = "Qwen2_5_VL" if version == "2.5" else "Qwen2VL"
    config_class = register_image_only_processor()[version]
    tokenizer = make_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|vision_start|>", "<|vision_end|>",
                                                                "<|image_pad|>", "<|video_pad|>"]})  # fmt: skip
    images = Qwen2VLImageProcessorPil(min_pixels=(2 * patch) ** 2, max_pixels=side**2, patch_size=patch, merge_size=2)
    template = (  # ChatML, image parts as Qwen2-VL's template writes them
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    processor = ImageOnlyQwen2VLProcessor(image_processor=images, tokenizer=tokenizer, chat_template=template)
    torch.manual_seed(seed)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (("image_token_id", "<|image_pad|>"),
           ("video_token_id", "<|video_pad|>"), ("vision_start_token_id", "<|vision_start|>"))}  # fmt: skip
    specials = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    heads = max(2, hidden // 64)
    rotary = hidden // heads // 2  # the rotary frequencies, split between time, height and width as Qwen's are
    sections = [rotary // 4, 3 * rotary // 8, rotary - rotary // 4 - 3 * rotary // 8]
    vision = dict(depth=layers, hidden_size=hidden, num_heads=heads, patch_size=patch, spatial_merge_size=2)
    if version == "2.5":  # windows of 2 x 2 merged patches, the last block attending to the whole image
        vision |= dict(intermediate_size=2 * hidden, out_hidden_size=hidden, window_size=4 * patch,
                       fullatt_block_indexes=[layers - 1])  # fmt: skip
    else:
        vision |= dict(embed_dim=hidden, mlp_ratio=2)
    config = config_class(
        vision_config=vision,
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         rope_scaling={"type": "mrope", "mrope_section": sections}, initializer_range=0.2,
                         **specials),
        **ids, **specials,
    )  # fmt: skip
    model_class = getattr(transformers, f"{name}ForConditionalGeneration")
    return model_class._from_config(config, attn_implementation="sdpa").eval(), processor


def make_llava_vlm(seed: int = 0, hidden: int = 32, layers: int = 2, side: int = 32, patch: int = 8) -> tuple[Any, Any]:
    """A random LLaVA (a CLIP vision tower, a projector, a Llama) and its processor, assembled from the test tokenizer
    and the PIL CLIP image processor: each image resized and cropped to ``side`` pixels, ``(side / patch)^2`` image
    tokens."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip import CLIPImageProcessorPil

    tokenizer = make_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    images = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    template = (  # ChatML, image parts as the processor's image token
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=patch, chat_template=template,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)  # fmt: skip
    torch.manual_seed(seed)
    heads = max(2, hidden // 64)
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=layers, num_attention_heads=heads, image_size=side, patch_size=patch),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=hidden,
                         intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )  # fmt: skip
    return LlavaForConditionalGeneration._from_config(config, attn_implementation="sdpa").eval(), processor


def make_gemma3_vlm(
    seed: int = 0, hidden: int = 32, layers: int = 2, side: int = 32, patch: int = 8
) -> tuple[Any, Any]:
    """A random Gemma 3 (a SigLIP vision tower pooled to 4 tokens an image, a Gemma 3 language model whose image
    tokens attend to each other both ways) and its processor, assembled from the test tokenizer (given Gemma's
    start/end-of-image and image tokens) and the PIL image processor: each image resized to ``side`` pixels."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3 import Gemma3ImageProcessorPil

    images = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")
    base = make_tokenizer()
    base.add_special_tokens({"additional_special_tokens": list(images)})
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer, eos_token="<|im_end|>", pad_token="<pad>", bos_token="<|endoftext|>",
        model_specific_special_tokens=dict(zip(("boi_token", "eoi_token", "image_token"), images)),
    )  # fmt: skip
    template = (  # ChatML, image parts as Gemma 3's start-of-image token (the processor expands it)
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<start_of_image>{% else %}{{ p['text'] }}"
        "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% endif %}"
    )
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": side, "width": side}),
                                tokenizer=tokenizer, chat_template=template, image_seq_length=4)  # fmt: skip
    torch.manual_seed(seed)
    heads = max(2, hidden // 64)
    ids = tokenizer.convert_tokens_to_ids(list(images))
    config = Gemma3Config(
        vision_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=side, patch_size=patch),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         head_dim=hidden // heads, sliding_window=4096, initializer_range=0.2),
        mm_tokens_per_image=4, boi_token_id=ids[0], eoi_token_id=ids[1], image_token_id=ids[2],
    )  # fmt: skip
    model = Gemma3ForConditionalGeneration._from_config(config, attn_implementation="sdpa").eval()
    with torch.no_grad():  # transformers leaves the projector's weight at zero: images would add nothing
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.2)
    return model, processor


def _image_only_qwen2_vl_processor() -> type:
    """Qwen2-VL's processor without its video processor: transformers builds that one with torchvision, which pip
    cannot install beside the CPU build of torch here. Images are processed exactly as by ``Qwen2VLProcessor``."""
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwen2VLProcessor


ImageOnlyQwen2VLProcessor = _image_only_qwen2_vl_processor()


def register_image_only_processor() -> dict[str, type]:
    """Let ``AutoProcessor`` load ``ImageOnlyQwen2VLProcessor`` (by its saved name) in this process; the configs of
    Qwen2-VL ("2") and Qwen2.5-VL ("2.5")."""
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2VLConfig

    for config_class in (Qwen2VLConfig, Qwen2_5_VLConfig):
        AutoProcessor.register(config_class, ImageOnlyQwen2VLProcessor, exist_ok=True)
    return {"2": Qwen2VLConfig, "2.5": Qwen2_5_VLConfig}


VLM_FAMILIES = {"idefics3": make_vlm, "qwen2_vl": make_qwen_vlm,
                "qwen2_5_vl": lambda seed=0: make_qwen_vlm(seed, version="2.5"), "llava": make_llava_vlm,
                "gemma3": make_gemma3_vlm}  # fmt: skip


@pytest.fixture(scope="session", params=list(VLM_FAMILIES))
def any_tiny_vlm(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """A tiny random VLM of each family lit_dpo trains, with its processor."""
    return VLM_FAMILIES[request.param]()


@pytest.fixture(scope="session")
def tiny_vlm() -> tuple[Any, Any]:
    return make_vlm()


def _saved_vlms(family: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two of a family's tiny models (seeds 0 and 1: a policy and a different reference), each saved with the
    processor as a Hugging Face folder."""
    folders = []
    for seed in (0, 1):
        folder = tmp_path_factory.mktemp(f"tiny_{family}_{seed}")
        model, processor = VLM_FAMILIES[family](seed)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        folders.append(str(folder))
    return folders[0], folders[1]


@pytest.fixture(scope="session")
def tiny_vlm_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``_saved_vlms`` of Idefics3 (SmolVLM's family)."""
    return _saved_vlms("idefics3", tmp_path_factory)


@pytest.fixture(scope="session")
def vlm_dirs_of(
    tmp_path_factory: pytest.TempPathFactory, tiny_vlm_dirs: tuple[str, str]
) -> Callable[[str], tuple[str, str]]:
    """``_saved_vlms`` of a family, saved once a session."""
    saved = {"idefics3": tiny_vlm_dirs}

    def of(family: str) -> tuple[str, str]:
        if family not in saved:
            saved[family] = _saved_vlms(family, tmp_path_factory)
        return saved[family]

    return of


@pytest.fixture(scope="session", params=list(VLM_FAMILIES))
def any_tiny_vlm_dirs(request: pytest.FixtureRequest, vlm_dirs_of: Callable[[str], tuple[str, str]]) -> tuple[str, str]:
    """``_saved_vlms`` of each family lit_dpo trains."""
    return vlm_dirs_of(request.param)


@pytest.fixture(scope="session")
def tiny_vlm_dir(tiny_vlm_dirs: tuple[str, str]) -> str:
    return tiny_vlm_dirs[0]


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerFast) -> tuple[str, str]:
    """Two tiny Llama folders sharing one tokenizer: a policy and a *different* reference."""
    root = tmp_path_factory.mktemp("tiny")
    paths = []
    for name, seed in (("policy", 0), ("reference", 1)):
        make_model(len(tokenizer), seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths.append(str(root / name))
    return paths[0], paths[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dirs: tuple[str, str]) -> str:
    return tiny_dirs[0]


@pytest.fixture(scope="session")
def random_llama() -> Callable[[int, int], LlamaForCausalLM]:
    """``random_llama(vocab_size, seed)``: a tiny random Llama, in memory."""
    return make_model


@pytest.fixture(scope="session")
def standard_rows() -> Callable[..., list[dict]]:
    """``standard_rows(n, seed=0)``: n pairs of string rows."""
    return _standard_rows


@pytest.fixture(scope="session")
def chat_rows() -> Callable[..., list[dict]]:
    """``chat_rows(n, seed=0)``: the same pairs as conversational rows."""
    return _chat_rows


@pytest.fixture(scope="session")
def unpaired_rows() -> Callable[..., list[dict]]:
    """``unpaired_rows(pairs, labels)``: each pair's chosen completion if its label is true, else its rejected one."""

    def make(pairs: list[dict], labels: list[bool]) -> list[dict]:
        return [
            {"prompt": p["prompt"], "completion": p["chosen"] if good else p["rejected"], "label": good}
            for p, good in zip(pairs, labels)
        ]

    return make


@pytest.fixture(scope="session")
def fit_args() -> Callable[..., list[str]]:
    """``fit_args(model_dir, train, val, root, *extra)``: the command line of a quiet fit (or validate) of
    ``model_dir`` on those files, its run under ``root``."""

    def args(model_dir: str, train: str, val: str, root: Any, *extra: str) -> list[str]:
        return [f"--model.model_name_or_path={model_dir}", f"--data.path={train}", f"--data.val_path={val}",
                f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false", *extra]  # fmt: skip

    return args


@pytest.fixture(scope="session")
def write_jsonl() -> Callable[[Path, list], str]:
    """``write_jsonl(path, rows)``: the rows as a JSONL file; returns its path."""
    return _write_jsonl


@pytest.fixture(scope="session")
def pair_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``(train, val)``: 16 standard training pairs and 4 validation pairs as JSONL files, shared (read only)."""
    folder = tmp_path_factory.mktemp("pair_files")
    return _write_jsonl(folder / "train.jsonl", _standard_rows(16)), _write_jsonl(
        folder / "val.jsonl", _standard_rows(4, 1)
    )


@pytest.fixture(scope="session")
def make_batch(tokenizer: PreTrainedTokenizerFast) -> Callable[..., Any]:
    """``make_batch(rows, layout="shared", tokenizer=...)``: rows as a file holds them -> a ``Batch``, through
    validation, tokenization and the collator of ``layout``: padded, shared (prefix) or packed."""
    from lit_dpo.data import PaddedCollator, SharedPrefixCollator, parse_row, tokenize_row

    layouts = {
        "padded": PaddedCollator,
        "shared": SharedPrefixCollator,
        "packed": lambda pad: SharedPrefixCollator(pad, pack_length=200),  # standard_rows(7): 2 rows, 1 padded
    }

    def make(rows: list[dict], layout: str = "shared", tokenizer: Any = tokenizer) -> Any:
        examples = [tokenize_row(tokenizer, parse_row(row)) for row in rows]
        return layouts[layout](tokenizer.pad_token_id)(examples)

    return make


@pytest.fixture(scope="session")
def batch_layouts() -> list[str]:
    """The names ``make_batch`` takes: every batch layout lit_dpo has."""
    return ["padded", "shared", "packed"]


@pytest.fixture(scope="session")
def dpo_module() -> Callable[..., Any]:
    """``dpo_module(**options)``: a ``DPOModule`` with its models loaded, outside any trainer."""
    from lit_dpo.module import DPOModule

    def make(**options: Any) -> DPOModule:
        module = DPOModule(**options)
        module.configure_model()
        return module

    return make


@pytest.fixture(scope="session")
def step_metrics() -> Callable[[Any, Any], dict[str, float]]:
    """``step_metrics(module, batch)``: lit_dpo's metrics over one batch (one ``compute_loss``)."""
    from lit_dpo.metrics import PreferenceMetrics

    def metrics(module: Any, batch: Any) -> dict[str, float]:
        collected = PreferenceMetrics()
        module.compute_loss(batch, collected)
        return {k: v.item() for k, v in collected.compute().items()}

    return metrics


@pytest.fixture(scope="session")
def sequence_logps() -> Callable[..., torch.Tensor]:
    """Test-only oracle: ``sequence_logps(logits, labels, average=False)``, the log-prob of each sequence's labelled
    tokens from full logits ``(N, T, V)`` and unshifted labels ``(N, T)`` (-100 where not scored), by log_softmax."""

    def oracle(logits: torch.Tensor, labels: torch.Tensor, average: bool = False) -> torch.Tensor:
        targets, logprobs = labels[:, 1:], logits[:, :-1].log_softmax(-1)  # position t predicts token t+1
        mask = targets != -100
        picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        sums = picked.sum(-1)
        return sums / mask.sum(-1).clamp(min=1) if average else sums

    return oracle


@pytest.fixture(scope="session")
def padded_labels() -> Callable[[Any], torch.Tensor]:
    """``padded_labels(batch)``: a padded batch's completion tokens as unshifted ``(2B, T)`` labels, -100 elsewhere
    (TRL's ``labels``), read off the positions the batch scores."""

    def labels(batch: Any) -> torch.Tensor:
        out = torch.full_like(batch.input_ids, -100)
        out.view(-1)[batch.completions.index + 1] = batch.completions.target  # the token after each predictor
        return out

    return labels
