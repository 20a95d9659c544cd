"""``WinRate``: at each validation, the policy and the reference answer held-out prompts; a judge says which is
better. Logs ``val/win_rate`` (ties count half), ``val/gen_length/{policy,reference}``, and the generations:
``generations/step_<N>.jsonl`` in the run directory always, a ``wandb.Table`` when W&B is a logger."""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from typing import Any, Iterator, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from lit_dpo import lora
from lit_dpo.data.prompts import Prompt
from lit_dpo.data.protocol import VisionData, preference_data
from lit_dpo.errors import describe
from lit_dpo.generation import Sampling, check_lockstep_images, generate
from lit_dpo.hf import load_model
from lit_dpo.judges import Judge, load_judge, wins
from lit_dpo.parallel import first_failure, gather_in_order, is_sharded
from lit_dpo.runs import run_directory, write_records


class WinRate(Callback):
    """Generations and win-rate of the policy against the reference, at every validation (``--generations.*``).

    Args:
        judge: ``reference_answer`` (token F1 against the row's chosen vs rejected answer: a cheap proxy),
            ``exact_answer`` (the prompt row's ``answer`` column, checked), ``reward_model:<folder or Hub id>`` (an
            HF sequence-classification reward model), or a dotted import path to a reward function
            ``f(prompts, completions, **columns) -> list[float]`` or a pairwise judge object with
            ``judge(prompts, completions_pairs) -> list[int]`` (TRL's conventions). None: the data module's judge
            (online DPO), else ``reference_answer``.
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
        judge: Optional[str] = None,
        num_prompts: int = 16,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        self.judge_name, self.num_prompts = judge, num_prompts
        self.sampling = Sampling(max_new_tokens, do_sample, temperature, top_p)
        self.sampling.check("WinRate")
        self.batch_size, self.seed = batch_size, seed
        self.judge: Optional[Judge] = None
        # every prompt's reference answer, generated once (kept in checkpoints: the reference may move on)
        self.reference_answers: Optional[list[list[int]]] = None
        self.last: dict[str, float] = {}  # the values of the last validation

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.num_prompts > 0 and self.judge is None:  # a bad name fails before any training
            data = preference_data(trainer)
            own = data.judge if data is not None else None  # online DPO's, already loaded
            if self.judge_name is None and own is not None:
                self.judge = own
            else:
                self.judge = load_judge(self.judge_name or "reference_answer")

    def state_dict(self) -> dict[str, Any]:
        return {"reference_answers": self.reference_answers}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reference_answers = state_dict.get("reference_answers")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # a cached reference keeps no model: before the first update, the policy is the reference
        fresh = trainer.global_step == 0 and self.reference_answers is None
        if fresh and _starts_as_policy(pl_module) and self._all_prompts(trainer):
            try:  # a failure here leaves them to the first validation, which says so
                answers, failure = self._generate(pl_module.policy, trainer), None
            except Exception as err:
                answers, failure = [], describe(err)
            if first_failure(trainer, failure) is None:
                self.reference_answers = gather_in_order(trainer, answers)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not (prompts := self._all_prompts(trainer)):
            return
        started = time.perf_counter()
        rank, world = trainer.global_rank, trainer.world_size
        synced = bool(pl_module.hparams.get("ref_sync_steps"))  # TR-DPO: against the reference of the moment
        fresh = self.reference_answers is None or len(self.reference_answers) != len(prompts) or synced
        try:  # generation and the judge (the user's code): a failure costs this validation's win-rate, not the run
            if fresh:
                with _reference_model(pl_module) as model:
                    reference = self._generate(model, trainer)
            else:
                reference = self.reference_answers[rank::world]
            records = self._judged(trainer, prompts[rank::world], self._generate(pl_module.policy, trainer), reference)
            failure = None
        except Exception as err:
            failure = describe(err)
        if (failure := first_failure(trainer, failure)) is not None:  # every rank learns of any rank's failure
            _say_once(trainer, f"lit_dpo: WinRate failed at step {trainer.global_step} ({failure}); no win-rate at "
                               "this validation, training goes on")  # fmt: skip
            return
        if fresh:
            self.reference_answers = gather_in_order(trainer, reference)
        self._log(trainer, pl_module, gather_in_order(trainer, records), time.perf_counter() - started)

    def _judged(
        self, trainer: Trainer, mine: list[Prompt], policy: list[list[int]], reference: list[list[int]]
    ) -> list[dict[str, Any]]:
        """This rank's prompts with both answers, decoded, and the judge's verdict (``win``)."""
        decode = lambda ids: trainer.datamodule.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        records = [
            {"prompt": decode(p.prompt_ids), "policy": decode(a), "reference": decode(r), **_written(p),
             "policy_length": len(a), "reference_length": len(r)}
            for p, a, r in zip(mine, policy, reference)
        ]  # fmt: skip
        columns = {k: [p.columns.get(k) for p in mine] for k in {k for p in mine for k in p.columns}}
        scores = wins(self.judge, [p.prompt for p in mine], [r["policy"] for r in records],
                      [r["reference"] for r in records], columns, self.seed + trainer.global_step)  # fmt: skip
        for record, score in zip(records, scores):
            record["win"] = score
        return records

    def _log(self, trainer: Trainer, pl_module: LightningModule, records: list[dict[str, Any]], seconds: float) -> None:
        count = len(records)
        values = {
            "val/win_rate": sum(r["win"] for r in records) / count,
            "val/gen_length/policy": sum(r["policy_length"] for r in records) / count,
            "val/gen_length/reference": sum(r["reference_length"] for r in records) / count,
        }
        pl_module.log_dict(values, on_step=False, on_epoch=True, sync_dist=False)  # the same on every rank
        # what the generations cost this validation (longer answers as the policy changes): never in perf/ rates
        pl_module.log("perf/generation_seconds", seconds, on_step=False, on_epoch=True, sync_dist=False)
        self.last = values
        if trainer.is_global_zero:
            write_records(run_directory(trainer) / "generations" / f"step_{trainer.global_step}.jsonl", records)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    columns = list(records[0])
                    logger.log_table("val/generations", columns, [[r[c] for c in columns] for r in records])

    def _all_prompts(self, trainer: Trainer) -> list[Prompt]:
        """The first ``num_prompts`` held-out prompts."""
        data = preference_data(trainer)
        if self.num_prompts <= 0 or data is None:
            return []
        return data.held_out_prompts(self.num_prompts)

    def _generate(self, model: torch.nn.Module, trainer: Trainer) -> list[list[int]]:
        """Completions of this rank's share of the prompts: rank r answers prompts r, r + world size, ..."""
        prompts, tokenizer = self._all_prompts(trainer), trainer.datamodule.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        world = trainer.world_size
        lockstep = -(-len(prompts) // world) if is_sharded(model) and world > 1 else None
        data = trainer.datamodule
        processor = data.processor if isinstance(data, VisionData) and data.processor is not None else None
        shard = prompts[trainer.global_rank :: world]
        count = len(shard)
        if lockstep is not None and any(p.images for p in prompts):  # every rank decides alike: the same prompts
            check_lockstep_images(prompts)
            shard = shard or prompts[:1]  # a rank without prompts decodes one (its answer dropped) beside the others
        mine, images = [p.prompt_ids for p in shard], [p.images for p in shard]
        seed = self.seed + trainer.global_rank
        answers = generate(model, mine, self.sampling, pad, tokenizer.eos_token_id, self.batch_size, seed, lockstep,
                           images, processor)  # fmt: skip
        return answers[:count]


def _written(prompt: Prompt) -> dict[str, Any]:
    """A prompt's columns as the records (JSONL, the logger's table) hold them: its images as their count."""
    return {k: len(prompt.images) if k == "images" else v for k, v in prompt.columns.items()}


def _say_once(trainer: Trainer, line: str) -> None:
    if trainer.is_global_zero:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


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
    elif reference is not None and lora.is_lora(pl_module.policy) and _starts_as_policy(pl_module):
        with pl_module.policy.disable_adapter():
            yield pl_module.policy
    else:
        hp = pl_module.hparams
        model = load_model(hp.ref_model_name_or_path or hp.model_name_or_path, hp.dtype, hp.trust_remote_code)
        yield model.to(pl_module.device)
        del model
        gc.collect()
