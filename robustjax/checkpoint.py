"""Checkpoints of one run folder: checksummed, the previous one kept until the new one is verified, one
writer at a time.

A checkpoint of step s is two files, `ckpt-<s>.msgpack` (the state bytes) and `ckpt-<s>.json` (its manifest:
step, file name, size, metadata and a sha256 over the bytes and the metadata), each written to a temporary
file, fsynced and renamed into place. `restore` takes the newest checkpoint whose manifest verifies; a damaged
one (missing, truncated or altered bytes, an unreadable manifest) is skipped with a warning naming it, and
when none verifies it raises `CheckpointError` naming every path: never a silent resume or a silent restart.
`RunLock` makes a second writer of the same folder fail at once.

This module knows bytes and JSON only (no JAX), so any process can inspect a run folder cheaply. Why not
orbax-checkpoint: its CheckpointManager gives the atomic rename and `max_to_keep`, but no content checksum
(orbax-checkpoint 0.12.8 restores a checkpoint with 64 flipped bytes silently), no fallback to the previous
step and no writer lock; those three are most of this file.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import numbers
import os
import re
import warnings
from pathlib import Path

FORMAT = 1
_MANIFEST = re.compile(r"ckpt-(\d+)\.json")


class CheckpointError(RuntimeError):
    """A run folder's checkpoints exist but none of them can be trusted."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One verified checkpoint: its step, state bytes, metadata (JSON) and manifest path."""
    step: int
    data: bytes
    meta: dict
    path: Path


def _digest(data: bytes, step: int, meta: dict) -> str:
    h = hashlib.sha256(data)
    h.update(json.dumps({"step": step, "meta": meta}, sort_keys=True).encode())
    return h.hexdigest()


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes data to path through a temporary file, fsync and rename: readers see the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def manifests(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, manifest path) of every checkpoint in run_dir, newest first (unverified)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _MANIFEST.fullmatch(p.name))]
    return sorted(found, reverse=True)


def verify(manifest: str | os.PathLike) -> Checkpoint:
    """The checkpoint behind one manifest; CheckpointError saying what is wrong unless its bytes, size and
    checksum match."""
    manifest = Path(manifest)
    try:
        m = json.loads(manifest.read_text())
        step, name, size, meta, digest = m["step"], m["file"], m["bytes"], m["meta"], m["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"manifest {manifest} is unreadable ({type(e).__name__}: {e})") from None
    data_path = manifest.with_name(name)
    try:
        data = data_path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {data_path} is missing or unreadable ({e.strerror})") from None
    if len(data) != size:
        raise CheckpointError(f"checkpoint {data_path} has {len(data)} bytes, its manifest says {size} (truncated?)")
    if _digest(data, step, meta) != digest:
        raise CheckpointError(f"checkpoint {data_path} does not match the sha256 in {manifest.name} (damaged)")
    return Checkpoint(step=step, data=data, meta=meta, path=manifest)


def _remove(step: int, manifest: Path) -> None:
    for p in (manifest, manifest.with_name(f"ckpt-{step}.msgpack")):
        p.unlink(missing_ok=True)


def save(run_dir: str | os.PathLike, step: int, data: bytes, meta: dict, *, keep: int = 2) -> Path:
    """Writes checkpoint `step` (bytes first, then the manifest), verifies it from disk, then keeps the `keep`
    newest verified checkpoints and removes older ones, and any of a later step (left by a run that resumed
    from an earlier one). meta must be JSON-serializable. Returns the manifest path; a write that fails or does
    not verify raises and removes nothing."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    step = int(step)
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta must be JSON-serializable: {e}") from None
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{step}.msgpack"
    manifest = run_dir / f"ckpt-{step}.json"
    write_atomic(run_dir / name, data)
    record = {"format": FORMAT, "step": step, "file": name, "bytes": len(data), "meta": meta,
              "sha256": _digest(data, step, meta)}
    write_atomic(manifest, json.dumps(record, indent=1).encode())
    _fsync_dir(run_dir)
    verify(manifest)
    for leftover in run_dir.glob("ckpt-*.tmp-*"):               # from a writer killed mid-write
        leftover.unlink(missing_ok=True)
    kept = 1
    for s, p in manifests(run_dir):
        if s == step:
            continue
        if s < step and kept < keep:
            try:
                verify(p)
                kept += 1
                continue
            except CheckpointError:
                pass
        _remove(s, p)
    return manifest


def restore(run_dir: str | os.PathLike) -> Checkpoint | None:
    """The newest checkpoint of run_dir that verifies, or None when there is none at all. Each damaged newer
    one is reported by warnings.warn naming its path and the step resumed from instead; CheckpointError
    (naming every path) when checkpoints exist but none verifies."""
    damaged = []
    for _, p in manifests(run_dir):
        try:
            ckpt = verify(p)
        except CheckpointError as e:
            damaged.append(str(e))
            continue
        for reason in damaged:
            warnings.warn(f"{reason}; falling back to the previous checkpoint, step {ckpt.step} ({p})",
                          stacklevel=2)
        return ckpt
    if damaged:
        raise CheckpointError(f"no checkpoint in {run_dir} can be trusted: " + "; ".join(damaged))
    return None


class RunLock:
    """An exclusive, non-blocking lock on a run folder (fcntl.flock on `<run_dir>/.lock`, released when the
    holder exits or dies). A second holder, in another process or through another RunLock in this one,
    gets RuntimeError naming the folder and the pid holding it. Use as a context manager."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RuntimeError(f"run folder {self.run_dir} is in use by another process (pid {holder}); "
                               "wait for it to finish or use another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
