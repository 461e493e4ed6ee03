"""A fake powercap sysfs tree that mimics the kernel's layout file by file.

Real layout (Linux ≥ 5.x): /sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/ holds
``name`` (package-0), ``energy_uj``, ``max_energy_range_uj``, ``enabled`` and subzone dirs
intel-rapl:0:0 (core), intel-rapl:0:1 (uncore), intel-rapl:0:2 (dram);
/sys/class/powercap/ holds a flat symlink per control type and zone.  ``intel-rapl-mmio:0``
exposes package-0 a second time.  Counters wrap to 0 after ``max_energy_range_uj``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FakeZone:
    dirname: str  # e.g. "intel-rapl:0" or "intel-rapl:0:2"
    name: str  # e.g. "package-0", "dram", "core", "psys"
    max_range_uj: int = 262_143_328_850
    energy_uj: int = 0
    readable: bool = True
    total_uj: float = 0.0  # truth: energy added since creation, unwrapped


@dataclass
class FakePowercap:
    root: Path  # plays /sys
    zones: dict[str, FakeZone] = field(default_factory=dict)

    @property
    def class_dir(self) -> Path:
        return self.root / "class" / "powercap"

    def add(self, dirname: str, name: str, max_range_uj: int = 262_143_328_850,
            start_uj: int = 0, control: str = "intel-rapl") -> FakeZone:
        parts = dirname.split(":")
        # nested real directory under devices/virtual/powercap/<control>/
        chain = [":".join(parts[: i + 1]) for i in range(1, len(parts))]
        real = self.root / "devices" / "virtual" / "powercap" / control
        for c in chain:
            real = real / c
        real.mkdir(parents=True, exist_ok=True)
        (real / "name").write_text(name + "\n")
        (real / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
        (real / "enabled").write_text("1\n")
        z = FakeZone(dirname, name, max_range_uj, start_uj)
        self.zones[dirname] = z
        self._write(z)
        self.class_dir.mkdir(parents=True, exist_ok=True)
        link = self.class_dir / dirname
        if not link.exists():
            os.symlink(real, link)
        ctl = self.class_dir / control
        if not ctl.exists():
            os.symlink(self.root / "devices" / "virtual" / "powercap" / control, ctl)
        return z

    def _path(self, z: FakeZone) -> Path:
        return self.class_dir / z.dirname / "energy_uj"

    def _write(self, z: FakeZone) -> None:
        p = self.class_dir / z.dirname / "energy_uj" if (self.class_dir / z.dirname).exists() \
            else None
        if p is None:
            # first write happens before the class symlink exists
            parts = z.dirname.split(":")
            ctl = parts[0]
            real = self.root / "devices" / "virtual" / "powercap" / ctl
            for i in range(1, len(parts)):
                real = real / ":".join(parts[: i + 1])
            p = real / "energy_uj"
        # sysfs reads are atomic: write a new file and rename it over the old one
        tmp = p.with_name(f".energy_uj.{threading.get_ident()}")
        tmp.write_text(f"{z.energy_uj}\n")
        os.chmod(tmp, 0o444 if z.readable else 0o000)
        os.replace(tmp, p)

    def spend(self, dirname: str, joules: float) -> None:
        """Add energy to a zone's counter, wrapping as the kernel does."""
        z = self.zones[dirname]
        z.total_uj += joules * 1e6
        z.energy_uj = int(round(z.energy_uj + joules * 1e6)) % (z.max_range_uj + 1)
        self._write(z)

    def deny(self, dirname: str) -> None:
        z = self.zones[dirname]
        z.readable = False
        self._write(z)


def intel_two_packages(root: Path, max_range_uj: int = 262_143_328_850) -> FakePowercap:
    """Two packages with core/uncore/dram, psys, and the mmio duplicate of package-0."""
    t = FakePowercap(root)
    for pkg in (0, 1):
        t.add(f"intel-rapl:{pkg}", f"package-{pkg}", max_range_uj)
        t.add(f"intel-rapl:{pkg}:0", "core", max_range_uj)
        t.add(f"intel-rapl:{pkg}:1", "uncore", max_range_uj)
        t.add(f"intel-rapl:{pkg}:2", "dram", max_range_uj)
    t.add("intel-rapl:2", "psys", max_range_uj)
    t.add("intel-rapl-mmio:0", "package-0", max_range_uj, control="intel-rapl-mmio")
    return t
