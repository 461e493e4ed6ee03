"""The host's hardware fingerprint: what a model needs to know about the machine."""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from pathlib import Path

from schemas.scenario_events import HardwareInfo


@functools.cache
def host_hardware(cpuinfo: str = "/proc/cpuinfo", meminfo: str = "/proc/meminfo") -> HardwareInfo:
    model = platform.processor() or "unknown"
    sockets: set[str] = set()
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("physical id"):
                sockets.add(line.split(":", 1)[1].strip())
    except OSError:
        pass
    mem_mib = 0
    try:
        mem_mib = int(Path(meminfo).read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    cpus = os.cpu_count() or 1
    # a deterministic class id (never Python's per-process randomised hash())
    klass = hashlib.sha256(f"{model}|{cpus}|{platform.machine()}".encode()).hexdigest()[:12]
    return HardwareInfo(cpu_model=model[:200], logical_cpus=cpus, sockets=max(1, len(sockets)),
                        memory_mib=mem_mib, arch=platform.machine() or "unknown",
                        hardware_class=klass)
