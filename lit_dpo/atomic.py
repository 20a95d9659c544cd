"""Writes that readers see whole or not at all: the new content goes under ``<path>.partial`` and is renamed over
the old (checkpoints, the export). A folder is replaced only if lit_dpo wrote it (``MARKER``): lit_dpo never
deletes what it did not write."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

MARKER = ".written_by_lit_dpo"  # in every folder lit_dpo writes and may later replace


class NotOurs(OSError):
    """A folder lit_dpo was to replace holds files it did not write: it is left as it is."""


def mark(folder: Path) -> None:
    """Record that lit_dpo wrote ``folder`` (so that a later run may replace it)."""
    (folder / MARKER).write_text("This folder was written by lit_dpo, which may replace it.\n")


def replaceable(path: Path) -> bool:
    """Whether lit_dpo may replace ``path``: it is not a folder, or an empty one, or one lit_dpo wrote (``MARKER``,
    or a distributed checkpoint's ``meta.pt``, as lit_dpo wrote them before it marked its folders)."""
    if not path.is_dir() or path.is_symlink():
        return True
    return (path / MARKER).is_file() or (path / "meta.pt").is_file() or not any(path.iterdir())


def write_atomically(path: Path, write: Any) -> None:
    """Let ``write(partial)`` create ``path``'s content (a file or a folder) under a temporary name next to it, then
    put it in place: readers see the old content or the new, never half of one."""
    partial = fresh_partial(path)
    try:
        write(partial)
    except BaseException:
        _remove(partial)  # no half-written file is left behind; the previous content is untouched
        raise
    put_in_place(path)


def fresh_partial(path: Path) -> Path:
    """``<path>.partial``, emptied: where a new version of ``path`` is written before ``put_in_place``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    _remove(partial)
    return partial


def put_in_place(path: Path) -> None:
    """Rename ``<path>.partial`` to ``path``. A folder replaces a folder in two renames; between them the old one
    is at ``<path>.old`` (``resumable_checkpoint`` looks there too)."""
    partial, old = path.with_name(path.name + ".partial"), path.with_name(path.name + ".old")
    if not replaceable(path):
        raise NotOurs(f"{path} holds files lit_dpo did not write; it was left as it is")
    if path.is_dir() and not path.is_symlink():
        _remove(old)
        path.rename(old)
    os.replace(partial, path)
    _remove(old)
    _sync_folder(path.parent)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # the rename itself survives a power loss
    finally:
        os.close(descriptor)
