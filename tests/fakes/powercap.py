"""A fake powercap sysfs tree that mimics the kernel's layout file by file.

Real layout (Linux ≥ 5.x): /sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/ holds
``name`` (package-0), ``energy_uj``, ``max_energy_range_uj``, ``enabled`` and subzone dirs
intel-rapl:0:0 (core), intel-rapl:0:1 (uncore), intel-rapl:0:2 (dram);
/sys/class/powercap/ holds a flat symlink per control type and zone.  ``intel-rapl-mmio:0``
exposes package-0 a second time.  Counters wrap to 0 after ``max_energy_range_uj``.
"""

from __future__ import annotations

import itertools
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
        z.energy_uj = round(z.energy_uj + joules * 1e6) % (z.max_range_uj + 1)
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


def amd_two_packages(root: Path, control: str = "intel-rapl",
                     max_range_uj: int = 65_532_610_987) -> FakePowercap:
    """AMD Zen: mainline kernels register AMD RAPL under the ``intel-rapl`` control type,
    one ``package-N`` per socket with a ``core`` subzone; no dram, no psys.  The counter is
    32 bits of 15.3 µJ units, so ``max_energy_range_uj`` is ~65.5 kJ (wraps in minutes).
    ``control="amd-rapl"`` builds the same tree under an ``amd-rapl`` control type."""
    t = FakePowercap(root)
    for pkg in (0, 1):
        t.add(f"{control}:{pkg}", f"package-{pkg}", max_range_uj, control=control)
        t.add(f"{control}:{pkg}:0", "core", max_range_uj, control=control)
    return t


def psys_only(root: Path, max_range_uj: int = 262_143_328_850) -> FakePowercap:
    """A laptop/client part whose firmware exposes only the platform (psys) domain."""
    t = FakePowercap(root)
    t.add("intel-rapl:0", "psys", max_range_uj)
    return t


@dataclass
class PowerProfile:
    """Piecewise-linear power over time: ``points`` are (t_s, power_w), sorted by time; two
    points at the same time make a step.  Constant before the first and after the last."""

    points: list[tuple[float, float]]

    def energy_j(self, t0: float, t1: float) -> float:
        """Exact integral of the profile over [t0, t1] (joules)."""
        if t1 <= t0:
            return 0.0
        pts = self.points
        total = 0.0
        if t0 < pts[0][0]:
            total += pts[0][1] * (min(t1, pts[0][0]) - t0)
        if t1 > pts[-1][0]:
            total += pts[-1][1] * (t1 - max(t0, pts[-1][0]))
        for (ta, pa), (tb, pb) in itertools.pairwise(pts):
            a, b = max(t0, ta), min(t1, tb)
            if b <= a or tb == ta:
                continue
            slope = (pb - pa) / (tb - ta)
            total += (pa + slope * (a - ta) + pa + slope * (b - ta)) / 2 * (b - a)
        return total


def drive(tree: FakePowercap, profiles: dict[str, PowerProfile], t0: float, t1: float,
          mirrors: dict[str, str] | None = None) -> None:
    """Advance each zone's counter by its profile's exact energy over [t0, t1]; a zone in
    ``mirrors`` (e.g. the mmio duplicate) receives the same energy as the zone it mirrors."""
    for dirname, prof in profiles.items():
        tree.spend(dirname, prof.energy_j(t0, t1))
    for dup, orig in (mirrors or {}).items():
        tree.spend(dup, profiles[orig].energy_j(t0, t1))
