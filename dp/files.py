"""File helpers shared by every stage (numpy- and torch-free: the robot side uses them too)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from dp.errors import DpError


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (checkpoint checksums, export file hashes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def hold_lock(path: Path, busy: str) -> int:
    """Take the exclusive advisory lock ``path`` (created if needed, recording our pid) and return its
    descriptor; a DpError with ``busy`` when another process holds it. The lock ends with the process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DpError(busy) from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid()}).encode())
    return fd


def release_lock(fd: int | None) -> None:
    """Release a lock from :func:`hold_lock` (closing the descriptor releases the flock)."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; a DpError naming the file when it does not parse."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DpError(f"{path}: not valid YAML ({exc})") from exc


def read_json(path: Path) -> Any:
    """The JSON document in ``path``; a DpError naming the file when it does not parse."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DpError(f"{path}: not valid JSON ({exc})") from exc
