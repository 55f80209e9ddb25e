"""Atomic, checksummed checkpoints that keep the previous good one.

File format: the 8-byte magic ``ASPCKPT1``, the 32-byte SHA-256 digest of the payload, then
the payload (``torch.save`` of a dict of tensors and plain values). A save writes a temporary
file in the same folder, fsyncs it, moves the current checkpoint to ``previous.ckpt``,
renames the temporary file to ``current.ckpt`` and fsyncs the folder. A crash at any point
leaves at least one complete, verifiable file. :meth:`CheckpointStore.load` verifies the
digest and, when ``current.ckpt`` is missing, truncated or corrupt, logs why and falls back
to ``previous.ckpt``. :meth:`CheckpointStore.restore` (what the service calls on start) does
the same, also refuses a file whose checksum verifies but whose payload does not load, sets
every damaged file aside as ``<name>.corrupt`` (so that it is reported once, kept for
inspection and never read again), removes temporary files left by a crash mid-write, and
says in a :class:`RestoreReport` what it used and why.

>>> import tempfile, torch
>>> store = CheckpointStore(tempfile.mkdtemp())
>>> info = store.save({"w": torch.ones(2), "version": 3})
>>> store.load()[0]["version"], len(info.sha256)
(3, 64)
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

MAGIC = b"ASPCKPT1"
_DIGEST = 32


class CorruptCheckpoint(ValueError):
    """A checkpoint file whose header or checksum does not verify."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    sha256: str
    size_bytes: int
    # set by save(): the former current.ckpt became previous.ckpt (False when there was no
    # current file, or when it was damaged and the previous one was kept instead)
    rotated: bool = False


@dataclass(frozen=True)
class RestoreReport:
    """What :meth:`CheckpointStore.restore` used and why.

    ``source``: ``current``, ``previous`` or ``none`` (start from a fresh model); ``reason``:
    ``verified`` (current.ckpt checked out), ``current_missing`` / ``current_corrupt`` (fell back
    to previous.ckpt), ``empty`` (no checkpoint at all) or ``all_corrupt`` (nothing usable);
    ``corrupt``: the damaged files found, as renamed aside.
    """

    source: str
    reason: str
    corrupt: tuple[str, ...] = ()


class CheckpointStore:
    """Checkpoints in one folder: ``current.ckpt`` and the one before it, ``previous.ckpt``."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.current = self.directory / "current.ckpt"
        self.previous = self.directory / "previous.ckpt"

    def save(self, payload: dict[str, Any]) -> CheckpointInfo:
        """Write ``payload`` as current.ckpt; ``rotated`` in the result says whether the former
        current.ckpt became previous.ckpt (otherwise previous.ckpt is untouched)."""
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).digest()
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=self.directory)
        rotated = False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC)
                f.write(digest)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if self.current.exists():
                if _verify(self.current.read_bytes()) is not None:
                    os.replace(self.current, self.previous)
                    rotated = True
                else:  # never let a corrupt file push out the last good one
                    logger.warning("checkpoint %s is corrupt; keeping %s as the previous one", self.current, self.previous)
            os.replace(tmp, self.current)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.directory)
        return CheckpointInfo(str(self.current), digest.hex(), len(MAGIC) + _DIGEST + len(data), rotated)

    def load(self) -> tuple[dict[str, Any], CheckpointInfo] | None:
        """The newest checkpoint that verifies, or None when there is none."""
        for path in (self.current, self.previous):
            if not path.exists():
                if path == self.current and self.previous.exists():
                    logger.warning("checkpoint %s is missing; falling back to %s", path, self.previous)
                continue
            raw = path.read_bytes()
            payload = _verify(raw)
            if payload is None:
                logger.error("checkpoint %s failed its sha256 check (or is truncated); falling back to %s",
                             path, self.previous if path == self.current else "a fresh model")
                continue
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
            return state, CheckpointInfo(str(path), hashlib.sha256(payload).hexdigest(), len(raw))
        return None

    def restore(self) -> tuple[tuple[dict[str, Any], CheckpointInfo] | None, RestoreReport]:
        """Like :meth:`load`, for a process starting up: damaged files are set aside, and the
        report says which file was used and why. Never returns a payload that did not verify."""
        for stale in self.directory.glob(".ckpt-*.tmp"):  # a write interrupted by a crash
            logger.warning("removing %s, left by an interrupted checkpoint write", stale)
            stale.unlink(missing_ok=True)
        corrupt: list[str] = []
        current_missing = not self.current.exists()
        for path, source in ((self.current, "current"), (self.previous, "previous")):
            if not path.exists():
                continue
            raw = path.read_bytes()
            payload = _verify(raw)
            state = None
            if payload is not None:
                try:
                    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
                except Exception as error:  # checksum fine, content not a checkpoint: never use it
                    logger.error("checkpoint %s verifies but does not load (%s)", path, error)
            if state is None:
                aside = path.with_name(path.name + ".corrupt")
                os.replace(path, aside)
                corrupt.append(str(aside))
                logger.error("checkpoint %s is damaged (sha256 mismatch, truncated or unreadable): moved to %s; "
                             "falling back to %s", path, aside,
                             "previous.ckpt" if source == "current" else "a fresh model")
                continue
            if source == "current":
                reason = "verified"
            else:
                reason = "current_missing" if current_missing else "current_corrupt"
                logger.warning("restoring %s: current.ckpt is %s", path, reason.split("_")[1])
            info = CheckpointInfo(str(path), hashlib.sha256(payload).hexdigest(), len(raw))
            return (state, info), RestoreReport(source, reason, tuple(corrupt))
        if corrupt:
            logger.error("no usable checkpoint in %s (%d damaged): starting from a fresh model",
                         self.directory, len(corrupt))
        return None, RestoreReport("none", "all_corrupt" if corrupt else "empty", tuple(corrupt))


def _verify(raw: bytes) -> bytes | None:
    """The payload of a checkpoint file if its header and digest check out."""
    if len(raw) < len(MAGIC) + _DIGEST or not raw.startswith(MAGIC):
        return None
    digest = raw[len(MAGIC): len(MAGIC) + _DIGEST]
    payload = raw[len(MAGIC) + _DIGEST:]
    return payload if hashlib.sha256(payload).digest() == digest else None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
