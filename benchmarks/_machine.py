"""The machine line every benchmark prints (CPU model or GPU name, cores, torch version, threads)."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def machine_line(device: str = "cpu") -> str:
    import torch

    name = torch.cuda.get_device_name() if str(device).startswith("cuda") else cpu_name()
    return f"machine: {name}, {os.cpu_count()} cores | torch {torch.__version__} | threads {torch.get_num_threads()}"
