"""Online (iterative) DPO: every epoch is a round. At its start the current policy samples K completions per
prompt, a judge scores them, and the best and worst sample of each prompt become the round's preference pairs.

    python -m lit_dpo.fit --data=lit_dpo.data.OnlineDataModule --data.path=prompts.jsonl \\
        --data.judge=my_rewards.correct --trainer.max_epochs=4          # 4 rounds

The round's pairs are written to ``<run dir>/online/round_<R>.jsonl`` (readable by ``--data.path``) and kept in
checkpoints: a run resumed mid-round trains on the same pairs, not on new samples. Held-out prompts give fixed
validation pairs (sampled once, from the initial policy) and the prompts of the win-rate (``WinRate``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch.utils.data import DataLoader

from lit_dpo.atomic import write_atomically
from lit_dpo.data.datamodule import DEMO, PreferenceDataModule
from lit_dpo.data.images import image_format, images_column
from lit_dpo.data.prepare import hold_out
from lit_dpo.data.prompts import Prompt, read_prompts
from lit_dpo.data.rounds import Judged, form_pairs, round_stats
from lit_dpo.data.rows import RowFormat
from lit_dpo.data.sources import Source, Sources, sample
from lit_dpo.data.tokenize import Pair, tokenize_image_prompt, tokenize_prompt
from lit_dpo.errors import DataError, InputError, describe
from lit_dpo.generation import Sampling, check_lockstep_images, generate
from lit_dpo.hf import load_text_tools
from lit_dpo.judges import load_judge, score_samples
from lit_dpo.parallel import first_failure, gather_in_order, is_sharded
from lit_dpo.runs import run_directory, write_records


class OnlineDataModule(PreferenceDataModule):
    """Preference pairs sampled from the policy each round (epoch) and paired by a judge: online DPO.

    Needs ``--trainer.reload_dataloaders_every_n_epochs=1`` (the CLI sets it). The reference is the initial model;
    ``--model.ref_sync_epochs=1`` makes it the previous round's policy instead. Rounds differ in size, so a decaying
    ``--model.lr_schedule`` takes its length from ``--trainer.max_steps`` when given, else from round 0's pairs.

    Args:
        path: Prompts: rows with a ``prompt`` (a string, or a list of messages) and any columns the judge reads,
            in any form ``PreferenceDataModule`` reads (files, data sets, lists of sources); ``demo``: simple
            questions (sums, capitals) with an ``answer`` column, for ``exact_answer``.
        judge: Scores samples: ``exact_answer`` (the row's ``answer``, checked), ``reward_model:<path or id>``, or a
            dotted import path to a reward function ``f(prompts, completions, **columns)`` or a pairwise judge
            (``lit_dpo.judges``); a pairwise judge compares every two samples of a prompt.
        num_samples: Completions sampled per prompt each round (K >= 2).
        prompts_per_round: Prompts each round takes, the next ones in turn (0: every prompt, every round).
        max_new_tokens: Longest sample.
        temperature: Sampling temperature.
        top_p: Nucleus sampling threshold.
        min_score_gap: A pair needs its best and worst score at least this far apart (and never tied).
        missing_eos_penalty: Subtracted from the score of a sample cut at ``max_new_tokens`` (TRL's option).
        generation_batch_size: Sequences sampled together.
        val_path: Held-out prompts, in any form ``path`` takes (default for ``demo``: its held-out questions);
            without it, ``val_split`` of ``path`` is held out.
        kwargs: The other options of ``PreferenceDataModule`` (batch_size, max_length, ...).
    """

    online = True  # the module reads it: pairs are unknown before training, the reference runs live
    demo_files = ("prompts", "val_prompts")

    def __init__(
        self,
        path: Sources = DEMO,
        judge: str = "exact_answer",
        num_samples: int = 4,
        prompts_per_round: int = 0,
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        top_p: float = 1.0,
        min_score_gap: float = 0.0,
        missing_eos_penalty: Optional[float] = None,
        generation_batch_size: int = 32,
        val_path: Optional[Sources] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path=path, val_path=val_path, **kwargs)
        if self.hparams.streaming:
            raise InputError("online DPO reads its prompts up front and samples its pairs: --data.streaming does "
                             "not apply")  # fmt: skip
        self.sampling = Sampling(max_new_tokens, True, temperature, top_p)
        self.sampling.check("--data")
        if num_samples < 2 or prompts_per_round < 0 or generation_batch_size < 1:
            raise InputError(f"--data.num_samples must be >= 2, prompts_per_round >= 0 and generation_batch_size >= "
                             f"1, got {num_samples}, {prompts_per_round}, {generation_batch_size}")  # fmt: skip
        self.judge: Any = None
        self.prompts: list[Prompt] = []
        self.val_prompts: list[Prompt] = []
        self.round = -1  # the round whose pairs train_examples holds
        self.val_formed = False
        self._fingerprint: Optional[str] = None

    def prepare_data(self) -> None:
        pass  # prompts are read in ``setup``: there is nothing to tokenize ahead (pairs are sampled each round)

    def setup(self, stage: str) -> None:
        if self.tokenizer is not None:
            return
        hp, trainer = self.hparams, self.trainer
        if stage == "fit" and trainer is not None and trainer.reload_dataloaders_every_n_epochs != 1:
            raise InputError("online DPO samples new pairs every epoch (round): it needs "
                             "--trainer.reload_dataloaders_every_n_epochs=1")  # fmt: skip
        self.tokenizer, self.processor = load_text_tools(*self.tokenizer_source())
        self.judge = load_judge(hp.judge)
        train, val = self._sources()
        read = lambda s: read_prompts(s.path, s.split, s.config_name, RowFormat(s.columns or {}, hp.roles or {}))  # noqa: E731
        train_rows, val_rows = [read(s) for s in train], [read(s) for s in val]
        if not val and hp.val_split > 0:  # hold out the same fraction of every source
            held = [hold_out(rows, hp.val_split, s.path) for s, rows in zip(train, train_rows)]
            val, train_rows, val_rows = train, [kept for kept, _ in held], [out for _, out in held]
        self.source_names = list(dict.fromkeys(s.name for s in train + val))
        self.prompts = [p for s, rows in zip(train, train_rows) for p in sample(self._tokenized(s, rows), s)]
        self.val_prompts = [p for s, rows in zip(val, val_rows) for p in self._tokenized(s, rows)]

    def _tokenized(self, source: Source, rows: list[tuple[Any, dict, int]]) -> list[Prompt]:
        """The source's prompts as token ids, each leaving room for ``max_new_tokens`` within the length limits."""
        hp, room = self.hparams, self.sampling.max_new_tokens
        limits = [n for n in (hp.max_prompt_length, hp.max_length and hp.max_length - room) if n is not None]
        limit = min(limits, default=None)
        if limit is not None and limit < 1:
            raise InputError(f"--data.max_length {hp.max_length} leaves no room for a prompt before "
                             f"--data.max_new_tokens {room}")  # fmt: skip
        prompts, cut, dropped = [], [], []
        for prompt, columns, number, images in rows:
            ids = self._prompt_ids(source, prompt, columns, number, images)
            if limit is not None and len(ids) > limit:
                if hp.truncation == "error":
                    raise DataError.at(source.path, number, "prompt", f"{len(ids)} tokens > {limit} (max_length - "
                                       "max_new_tokens, or max_prompt_length); raise the limit or pass "
                                       "--data.truncation=keep_start or drop")  # fmt: skip
                # a prompt with images is dropped, never cut: its image tokens must stay whole
                (dropped if hp.truncation == "drop" or images else cut).append(number)
                if hp.truncation == "drop" or images:
                    continue
                ids = ids[-limit:]  # keep the end, where the question is
            prompts.append(Prompt(ids, prompt, columns, self.source_names.index(source.name), number, images))
        if cut or dropped:
            rank_zero_warn(f"{source.path}: {len(cut)} prompts truncated and {len(dropped)} dropped to leave "
                           f"{room} new tokens within {self.limits}")  # fmt: skip
        if not prompts:
            raise DataError(f"{source.path}: every prompt was dropped by the length limits")
        return prompts

    def _prompt_ids(self, source: Source, prompt: Any, columns: dict, number: int, images: tuple) -> list[int]:
        tools = columns.get("tools") if isinstance(columns.get("tools"), list) else None
        if not images:
            return tokenize_prompt(self.tokenizer, prompt, tools)
        return tokenize_image_prompt(self.processor, prompt, images, source.path, number, tools)

    def held_out_prompts(self, count: int) -> list[Prompt]:
        """The first ``count`` held-out prompts, their images (if any) in an ``images`` column for the judge."""
        return [replace(p, columns=p.columns | images_column(p.images)) for p in self.val_prompts[:count]]

    def fingerprint(self) -> str:
        """The prompts (in order) and everything that decides a round's pairs: what a resumed run must share."""
        if self._fingerprint is None:
            hp = self.hparams
            images = lambda p: [hashlib.sha256(data).hexdigest() for data in p.images]  # noqa: E731
            settings = [hp.judge, hp.num_samples, hp.prompts_per_round, asdict(self.sampling), hp.min_score_gap,
                        hp.missing_eos_penalty, [(p.prompt_ids, p.source, images(p)) for p in self.prompts]]  # fmt: skip
            self._fingerprint = hashlib.sha256(json.dumps(settings).encode()).hexdigest()
        return self._fingerprint

    def train_dataloader(self) -> DataLoader:
        current = self.trainer.current_epoch
        if self.round != current:  # a resumed round keeps the pairs its checkpoint holds
            self.train_examples, self.round = self._new_round(current), current
        return super().train_dataloader()

    def val_dataloader(self) -> DataLoader:
        if not self.val_formed and self.val_prompts:
            self.val_examples, _ = self._pairs(self.val_prompts, -1, "val_pairs")
            self.val_formed = True
            if not self.val_examples:
                rank_zero_warn("no held-out prompt gave a validation pair (every prompt's samples tied)")
        return super().val_dataloader()

    def _new_round(self, number: int) -> list[Pair]:
        started = time.monotonic()
        prompts = self._round_prompts(number)
        pairs, stats = self._pairs(prompts, number, f"round_{number}")
        stats |= {"online/round": float(number), "online/generation_seconds": time.monotonic() - started}
        self._report(number, len(prompts), stats)
        if not pairs:
            rank_zero_warn(f"online round {number}: no prompt gave a pair (every prompt's samples tied under the "
                           "judge), so training stops here; raise temperature or num_samples")  # fmt: skip
        return pairs

    def _round_prompts(self, number: int) -> list[Prompt]:
        each = self.hparams.prompts_per_round
        if not each:
            return self.prompts
        return [self.prompts[(number * each + i) % len(self.prompts)] for i in range(each)]

    def _pairs(self, prompts: list[Prompt], number: int, name: str) -> tuple[list[Pair], dict[str, float]]:
        """Sample, judge and pair ``prompts`` (each rank its share), write the pairs' JSONL, return them and the
        round's statistics."""
        judged = self._sample_and_judge(prompts, number)
        pairs, records = form_pairs(prompts, judged, self.hparams.min_score_gap)
        _write_jsonl(self.trainer, name, records)
        return pairs, round_stats(judged, len(pairs))

    def _sample_and_judge(self, prompts: list[Prompt], number: int) -> list[Judged]:
        """K samples of this rank's prompts (r, r + world size, ...) from the policy, judged; every rank's, in order."""
        trainer, k, tokenizer = self.trainer, self.hparams.num_samples, self.tokenizer
        rank, world = trainer.global_rank, trainer.world_size
        policy = trainer.lightning_module.policy
        mine = list(range(rank, len(prompts), world))
        lockstep = -(-len(prompts) // world) * k if is_sharded(policy) and world > 1 else None
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        seed = (int(os.environ.get("PL_GLOBAL_SEED", 0)) * 1_000_003 + number + 1) * 1_009 + rank
        pictured = any(p.images for p in prompts)
        if lockstep is not None and pictured:  # every rank decides alike: the same prompts
            check_lockstep_images(prompts)
        # a rank without prompts decodes the first one's samples (then dropped) beside the others, with its images
        sampled = mine or ([0] if lockstep is not None and pictured else [])
        ids = [prompts[i].prompt_ids for i in sampled for _ in range(k)]
        images = [prompts[i].images for i in sampled for _ in range(k)] if pictured else None
        samples, texts, scores, failure = [], [], [], None
        stage = "sampling"
        try:  # a failure on one rank (the judge is the user's code) stops every rank, now, with one line
            flat = generate(policy, ids, self.sampling, pad, tokenizer.eos_token_id,
                            self.hparams.generation_batch_size, seed, lockstep, images, self.processor)  # fmt: skip
            flat = flat[: len(mine) * k]
            samples = [flat[j * k : (j + 1) * k] for j in range(len(mine))]
            texts = [[tokenizer.decode(s, skip_special_tokens=True) for s in group] for group in samples]
            stage = "the judge"
            scores = score_samples(self.judge, [prompts[i].prompt for i in mine], texts,
                                   [prompts[i].columns | images_column(prompts[i].images) for i in mine],
                                   seed)  # fmt: skip
        except Exception as err:
            failure = f"{stage} failed on rank {rank} ({describe(err)})"
        if (failure := first_failure(trainer, failure)) is not None:
            where = f"round {number}" if number >= 0 else "the held-out prompts"
            raise InputError(f"online DPO, {where}: {failure}")
        penalty = self.hparams.missing_eos_penalty
        if penalty:
            ended = [[bool(s) and s[-1] == tokenizer.eos_token_id for s in group] for group in samples]
            scores = [[v - (0 if e else penalty) for v, e in zip(vs, es)] for vs, es in zip(scores, ended)]
        judged = [Judged(i, s, t, v) for i, s, t, v in zip(mine, samples, texts, scores)]
        return sorted(gather_in_order(trainer, judged), key=lambda item: item.prompt)

    @rank_zero_only
    def _report(self, number: int, prompts: int, stats: dict[str, float]) -> None:
        for logger in self.trainer.loggers:
            logger.log_metrics(stats, step=self.trainer.global_step)
        print(f"lit_dpo: round {number}: {prompts} prompts x {self.hparams.num_samples} "
              f"samples in {stats['online/generation_seconds']:.1f} s, mean score {stats['online/score_mean']:.3f} "
              f"(max {stats['online/score_max']:.3f}), {stats['online/pairs']:.0f} pairs "
              f"({stats['online/pair_fraction']:.0%})", flush=True)  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """The round and its pairs, and the validation pairs: a resumed run trains on these, not on new samples."""
        return {"round": self.round, "train": [asdict(p) for p in self.train_examples],
                "val": [asdict(p) for p in self.val_examples] if self.val_formed else None}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.round = state_dict["round"]
        self.train_examples = [Pair(**p) for p in state_dict["train"]]
        if state_dict.get("val") is not None:
            self.val_examples, self.val_formed = [Pair(**p) for p in state_dict["val"]], True


@rank_zero_only
def _write_jsonl(trainer: Any, name: str, records: list[dict[str, Any]]) -> None:
    folder = run_directory(trainer) / "online"
    try:
        records = [_with_image_files(folder, record) for record in records]
    except OSError as err:  # a record of what happened (the checkpoint holds the pairs): training goes on
        rank_zero_warn(f"could not write the images of {folder / name}.jsonl ({err}); training goes on without it")
        return
    write_records(folder / f"{name}.jsonl", records)


def _with_image_files(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The record with its images (encoded bytes) written once each under ``folder/images``, named by their
    content, and listed by their paths relative to ``folder``: the round's file reads back with ``--data.path``."""
    if not record.get("images"):
        return record
    paths = []
    for data in record["images"]:
        path = f"images/{hashlib.sha256(data).hexdigest()[:24]}.{image_format(data)}"
        if not (folder / path).is_file():
            write_atomically(folder / path, lambda partial: partial.write_bytes(data))
        paths.append(path)
    return record | {"images": paths}
