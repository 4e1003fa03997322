"""Simulate a job killed in the middle of an atomic write (what a scheduler's SIGKILL leaves behind)."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def kill_mid_write(target: Path, data: bytes) -> int:
    """A child process starts an atomic write of ``target`` and is SIGKILLed inside it (no cleanup can run).
    Returns the child's process id."""
    pid = os.fork()
    if pid == 0:  # the child
        from tagalign.atomic import atomic_path

        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(0)  # never reached
    assert os.waitpid(pid, 0)[1] & 0x7F == signal.SIGKILL
    return pid
