"""Work over a stream in chunks, in order: in this process, or in forked worker processes once the stream proves
long enough to be worth them (the first read of a large source, ``lit_dpo.data.store``)."""

from __future__ import annotations

import itertools
import multiprocessing
import os
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
R = TypeVar("R")
INLINE_CHUNKS = 4  # chunks done in this process before worker processes start: small streams need none


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def default_num_proc() -> int:
    """The processes a first read tokenizes in by default: this process's CPUs, at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


class ordered_map:
    """``with ordered_map(job, n) as mapped: mapped(chunks)``: ``job`` over the chunks, results in order: the first
    ``INLINE_CHUNKS`` here, the rest (if any) in ``n`` forked worker processes (n > 1), which inherit ``job`` (a
    tokenizer, say) instead of receiving a copy. Leaving the block stops the workers, on an error too."""

    def __init__(self, job: Callable[[Any], Any], num_proc: int) -> None:
        self.job, self.num_proc, self.pool = job, num_proc, None

    def __enter__(self) -> Callable[[Iterable[Any]], Iterator[Any]]:
        return self._mapped

    def _mapped(self, chunks: Iterable[Any]) -> Iterator[Any]:
        chunks = iter(chunks)
        yield from map(self.job, islice(chunks, INLINE_CHUNKS))
        following = next(chunks, None)
        if following is None:
            return
        rest = itertools.chain([following], chunks)
        if self.num_proc <= 1:
            yield from map(self.job, rest)
            return
        global _JOB
        _JOB = self.job
        # the tokenizers library's threads do not survive a fork: workers run single-threaded, told so up front
        # (else the library warns in each of them)
        setting = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        try:
            self.pool = multiprocessing.get_context("fork").Pool(self.num_proc)
        finally:
            if setting is None:
                del os.environ["TOKENIZERS_PARALLELISM"]
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = setting
        yield from self.pool.imap(_run_job, rest)

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.terminate()  # workers still busy (after an error) are stopped: nothing is left running
            self.pool.join()


_JOB: Optional[Callable[[Any], Any]] = None  # what forked workers run (set before the fork)


def _run_job(chunk: Any) -> Any:
    assert _JOB is not None
    return _JOB(chunk)
