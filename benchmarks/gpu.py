"""lit_dpo against TRL's DPOTrainer on one GPU: a 1B model in bf16 on dialogue-length pairs, tokens/s, MFU and peak
GPU memory, side by side in one run (under 5 minutes on an H100/H200)::

    python benchmarks/gpu.py                  # Llama-3.2-1B's shape, random weights, bf16, 8 pairs a step
    python benchmarks/gpu.py --tiny --device cpu --steps 2 --warmup 1 --systems lit_dpo trl_default   # the script

Systems (each in its own process, through ``benchmarks/vs_trl.py``'s workers, so the jobs are the same: same pairs
in the same order, AdamW at a constant rate, no clipping): lit_dpo's defaults (prefix sharing, sdpa with a dense
mask), ``lit_dpo_flex`` (prefix sharing with FlexAttention block masks), ``lit_dpo_padded`` (TRL's layout), TRL's
defaults and TRL with Liger's kernels (``use_liger_kernel=True``). The weights are random (nothing is downloaded):
speed and memory do not depend on them. MFU counts 6 x parameters per real token for the policy (forward and
backward) and 2 x for the reference's forward, attention not counted, against the GPU's dense bf16 peak; tokens are
the padded layout's real tokens (prompt twice) for every system, so prefix sharing's MFU is an effective one.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_trl  # noqa: E402  (the workers)

SYSTEMS = ("lit_dpo", "trl_default", vs_trl.TRL_LIGER, "lit_dpo_padded", "lit_dpo_flex")
LLAMA_1B = dict(  # meta-llama/Llama-3.2-1B's config.json
    hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
    vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=True,
    rms_norm_eps=1e-5,
)  # fmt: skip
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=1024, tie_word_embeddings=True)  # fmt: skip


def build_model(root: Path, shape: dict, device: str) -> tuple[str, int]:
    """A random Llama of ``shape`` in bf16 with the tests' small tokenizer (token ids below 300: the LM head is
    still ``vocab_size`` wide, as costly as with a real tokenizer); its folder and parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import make_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**shape)).to(torch.bfloat16)
    folder = root / "model"
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return str(folder), sum(p.numel() for p in model.parameters())


def build_pairs(root: Path, n: int, prompt_words: int, completion_words: int) -> str:
    """``n`` rows of random words: prompts of ``prompt_words``, completions of 0.75 to 1.25 times
    ``completion_words`` (the tests' tokenizer makes about one token a word)."""
    rng = random.Random(0)
    words = "the a cat dog sat ran on mat big small red blue yes no is it what why answer question good bad".split()

    def text(length: int) -> str:
        return " ".join(rng.choice(words) for _ in range(length))

    def completion() -> str:
        return text(rng.randint(3 * completion_words // 4, 5 * completion_words // 4))

    path = root / "pairs.jsonl"
    rows = [{"prompt": text(prompt_words), "chosen": completion(), "rejected": completion()} for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def main() -> None:
    parser = vs_trl.arguments(__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--prompt_words", type=int, default=256)
    parser.add_argument("--completion_words", type=int, default=256)
    parser.add_argument("--profile_dir", default=None, help="each system's busiest operators (2 steps) go here")
    parser.add_argument("--output", default=None, help="also write every system's figures to this JSON file")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the device's dense bf16 peak (else table)")
    parser.set_defaults(device="cuda", dtype="bfloat16", batch=8, steps=10, warmup=3, max_length=1024)
    args = parser.parse_args()
    started = time.time()
    root = Path(tempfile.mkdtemp())
    args.model, params = build_model(root, TINY if args.tiny else LLAMA_1B, args.device)
    args.data = build_pairs(root, (args.steps + args.warmup) * args.batch, args.prompt_words, args.completion_words)
    results = {}
    for system in args.systems:
        try:
            results[system] = vs_trl._run_worker(args, system)
        except SystemExit as failed:  # the others still run; the failure is shown
            print(failed, file=sys.stderr)
    if args.output:
        Path(args.output).write_text(json.dumps(results))
    _show(args, params, results, _peak(args), time.time() - started)


def _peak(args) -> float | None:
    from lit_dpo.callbacks.throughput import device_peak_tflops

    return device_peak_tflops("bf16", args.peak_tflops) if args.device == "cuda" else args.peak_tflops


def _show(args, params: int, results: dict[str, dict], peak: float | None, seconds: float) -> None:
    import torch

    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"# {time.strftime('%Y-%m-%d')}, {device}, {args.dtype}, Llama {params / 1e9:.2f}B (random weights), "
          f"{args.batch} pairs/step, prompts {args.prompt_words} tokens, completions ~{args.completion_words}, "
          f"{args.steps} timed steps after {args.warmup}; whole run {seconds:.0f} s")  # fmt: skip
    print(f"{'system':16s} {'s/step':>7s} {'tokens/s':>9s} {'MFU':>6s} {'peak GPU GiB':>12s} {'loss diff':>10s}")
    base = results.get("lit_dpo") or next(iter(results.values()))
    for system, r in results.items():
        mfu = 8 * params * r["tokens_per_s"] / (peak * 1e12) if peak else float("nan")  # 6N policy + 2N reference
        diff = vs_trl._max_relative_difference(r["losses"], base["losses"])
        print(f"{system:16s} {r['step_s']:7.3f} {r['tokens_per_s']:9.0f} {mfu:6.1%} {r['peak_gpu_gib']:12.2f} "
              f"{diff:10.1e}")  # fmt: skip
    for mine in (s for s in results if s.startswith("lit_dpo")):
        for other in (s for s in results if s.startswith("trl")):
            lit, r = results[mine], results[other]
            memory = lit["peak_gpu_gib"] / r["peak_gpu_gib"] if r["peak_gpu_gib"] else float("nan")
            print(
                f"{mine} / {other}: {lit['tokens_per_s'] / r['tokens_per_s']:.2f}x tokens/s, {memory:.2f}x peak memory"
            )


if __name__ == "__main__":
    main()
