"""``WinRate``: at each validation, the policy and the reference answer held-out prompts; a judge says which is
better. Logs ``val/win_rate`` (ties count half), ``val/gen_length/{policy,reference}``, and the generations:
``generations/step_<N>.jsonl`` in the run directory always, a ``wandb.Table`` when W&B is a logger."""

from __future__ import annotations

import contextlib
import gc
import json
from typing import Any, Iterator, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from lit_dpo.data.tokenize import Pair
from lit_dpo.hf import load_model
from lit_dpo.judges import Judge, load_judge, wins
from lit_dpo.parallel import is_sharded
from lit_dpo.runs import run_directory


class WinRate(Callback):
    """Generations and win-rate of the policy against the reference, at every validation.

    Args:
        judge: ``reference_answer`` (token F1 against the row's chosen vs rejected answer: a cheap proxy),
            ``reward_model:<folder or Hub id>`` (an HF sequence-classification reward model), or a dotted import
            path to a reward function ``f(prompts, completions) -> list[float]`` or a pairwise judge object with
            ``judge(prompts, completions_pairs) -> list[int]`` (TRL's conventions).
        num_prompts: How many held-out prompts (the first ones of the validation set; 0: off).
        max_new_tokens: Longest generation.
        do_sample: Sample instead of greedy decoding.
        temperature: Sampling temperature.
        top_p: Nucleus sampling threshold.
        batch_size: Prompts generated together.
        seed: Seed of sampling and of the pair order shown to a pairwise judge.
    """

    def __init__(
        self,
        judge: str = "reference_answer",
        num_prompts: int = 16,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        self.judge_name, self.num_prompts, self.max_new_tokens = judge, num_prompts, max_new_tokens
        self.sampling = {"do_sample": do_sample, "temperature": temperature, "top_p": top_p} if do_sample else {}
        self.batch_size, self.seed = batch_size, seed
        self.judge: Optional[Judge] = None
        self.reference_answers: Optional[list[list[int]]] = None  # this rank's share, generated once
        self.last: dict[str, float] = {}  # the values of the last validation

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.num_prompts > 0 and self.judge is None:
            self.judge = load_judge(self.judge_name)  # a bad name fails before any training

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # a cached reference keeps no model: before the first update, the policy is the reference
        fresh = trainer.global_step == 0 and self.reference_answers is None
        if fresh and _starts_as_policy(pl_module) and self._prompts(trainer):
            self.reference_answers = self._generate(pl_module.policy, trainer)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not (examples := self._prompts(trainer)):
            return
        tokenizer = trainer.datamodule.tokenizer
        synced = bool(pl_module.hparams.get("ref_sync_steps"))
        if self.reference_answers is None or synced:
            with _reference_model(pl_module) as model:
                self.reference_answers = self._generate(model, trainer)
        policy = self._generate(pl_module.policy, trainer)
        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        records = [
            {"prompt": decode(ex.prompt_ids), "policy": decode(p), "reference": decode(r),
             "chosen": decode(ex.chosen_ids), "rejected": decode(ex.rejected_ids),
             "policy_length": len(p), "reference_length": len(r)}
            for ex, p, r in zip(examples, policy, self.reference_answers)
        ]  # fmt: skip
        columns = {k: [r[k] for r in records] for k in ("chosen", "rejected")}
        scores = wins(self.judge, [r["prompt"] for r in records], [r["policy"] for r in records],
                      [r["reference"] for r in records], columns, self.seed + trainer.global_step)  # fmt: skip
        for record, score in zip(records, scores):
            record["win"] = score
        self._log(trainer, pl_module, _gather(trainer, records))

    def _log(self, trainer: Trainer, pl_module: LightningModule, records: list[dict[str, Any]]) -> None:
        count = len(records)
        values = {
            "val/win_rate": sum(r["win"] for r in records) / count,
            "val/gen_length/policy": sum(r["policy_length"] for r in records) / count,
            "val/gen_length/reference": sum(r["reference_length"] for r in records) / count,
        }
        pl_module.log_dict(values, on_step=False, on_epoch=True, sync_dist=False)  # the same on every rank
        self.last = values
        if trainer.is_global_zero:
            folder = run_directory(trainer) / "generations"
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / f"step_{trainer.global_step}.jsonl", "w") as handle:
                handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    columns = list(records[0])
                    logger.log_table("val/generations", columns, [[r[c] for c in columns] for r in records])

    def _all_prompts(self, trainer: Trainer) -> list[Pair]:
        """The first ``num_prompts`` validation pairs."""
        datamodule = trainer.datamodule
        if self.num_prompts <= 0 or datamodule is None:
            return []
        return [ex for ex in datamodule.val_examples if isinstance(ex, Pair) and ex.weight > 0][: self.num_prompts]

    def _prompts(self, trainer: Trainer) -> list[Pair]:
        """This rank's share of them: rank r answers prompts r, r + world size, ..."""
        return self._all_prompts(trainer)[trainer.global_rank :: trainer.world_size]

    @torch.no_grad()
    def _generate(self, model: torch.nn.Module, trainer: Trainer) -> list[list[int]]:
        """Completions of this rank's prompts: batched, left-padded; sharded models step in lockstep over ranks."""
        examples, tokenizer = self._prompts(trainer), trainer.datamodule.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        synced = is_sharded(model) and trainer.world_size > 1
        share = -(-len(self._all_prompts(trainer)) // trainer.world_size)  # the most any rank answers
        device = next(model.parameters()).device
        answers, was_training = [], model.training
        model.eval()
        if self.sampling:
            torch.manual_seed(self.seed + trainer.global_rank)
        for start in range(0, max(share, 1) if synced else len(examples), self.batch_size):
            prompts = [ex.prompt_ids for ex in examples[start : start + self.batch_size]] or [[pad]]
            width = max(map(len, prompts))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
            if synced:  # through the model's own forward, which FSDP hooks: generate() bypasses them under PEFT
                out = self._lockstep(model, ids, mask)
            else:
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                                     pad_token_id=pad, **self.sampling)  # fmt: skip
            answers += [_until_eos(row.tolist(), tokenizer.eos_token_id, pad) for row in out[:, width:]]
        model.train(was_training)
        return answers[: len(examples)]

    def _lockstep(self, model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Decoding by full forwards, the same number on every rank (no cache: sharded runs are short here)."""
        for _ in range(self.max_new_tokens):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each prompt starts at position 0
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
            if self.sampling:
                probs = torch.softmax(logits / self.sampling["temperature"], dim=-1)
                kept, order = probs.sort(dim=-1, descending=True)
                kept[kept.cumsum(-1) - kept > self.sampling["top_p"]] = 0  # nucleus
                token = order.gather(-1, torch.multinomial(kept, 1))
            else:
                token = logits.argmax(-1, keepdim=True)
            ids, mask = torch.cat([ids, token], 1), torch.cat([mask, torch.ones_like(token)], 1)
        return ids


def _until_eos(tokens: list[int], eos: Optional[int], pad: int) -> list[int]:
    """The generated tokens up to and including the first EOS (padding after it is not part of the answer)."""
    if eos is not None and eos in tokens:
        return tokens[: tokens.index(eos) + 1]
    while tokens and tokens[-1] == pad and pad != eos:
        tokens = tokens[:-1]
    return tokens


def _starts_as_policy(pl_module: LightningModule) -> bool:
    hp = pl_module.hparams
    return hp.get("ref_model_name_or_path") in (None, hp.get("model_name_or_path"))


@contextlib.contextmanager
def _reference_model(pl_module: LightningModule) -> Iterator[torch.nn.Module]:
    """The reference as a model that generates: the live one, the LoRA base, or (a cached reference keeps none)
    the reference loaded for the occasion and freed after."""
    reference = pl_module.reference
    if reference is not None and reference.model is not None:
        yield reference.model
    elif reference is not None and hasattr(pl_module.policy, "disable_adapter") and _starts_as_policy(pl_module):
        with pl_module.policy.disable_adapter():
            yield pl_module.policy
    else:
        hp = pl_module.hparams
        model = load_model(hp.ref_model_name_or_path or hp.model_name_or_path, hp.dtype, hp.trust_remote_code)
        yield model.to(pl_module.device)
        del model
        gc.collect()


def _gather(trainer: Trainer, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's records, in prompt order (rank r holds prompts r, r + world, ...)."""
    if trainer.world_size == 1:
        return records
    shares: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(shares, records)
    return [share[i] for i in range(max(map(len, shares))) for share in shares if i < len(share)]
