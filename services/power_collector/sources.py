"""Power sources: thin readers of the host's interfaces (powercap sysfs, /proc/stat).

Each source declares its zones once (``zones()``) and then returns one reading per call to
``read(mono_ns)``: cumulative joules and interval power per zone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from schemas.power_samples import Zone

from .logic import CounterTracker, CpuTimeEstimator, default_estimate_watts, parse_proc_stat


class SourceUnavailable(RuntimeError):
    """The source cannot be used on this host; the message says why and how to fix it."""


@dataclass
class Reading:
    energy_j: dict[str, float]
    power_w: dict[str, float]
    wrap_ambiguous: list[str] = field(default_factory=list)


PERMISSION_HINT = (
    "energy_uj is readable only by root since Linux 5.10 (CVE-2020-8694, 'Platypus'). Fixes: "
    "run the collector as root; or add a udev rule / sysfsutils entry that makes "
    "/sys/class/powercap/*/energy_uj group-readable (e.g. chmod 0440 + chgrp power); or grant "
    "CAP_DAC_READ_SEARCH to the collector; in a container, mount the host's /sys/class/powercap "
    "read-only (-v /sys/class/powercap:/sys/class/powercap:ro) and run it as root"
)


@dataclass
class _RaplZone:
    name: str
    kind: str
    path: Path
    in_total: bool
    tracker: CounterTracker
    last_j: float | None = None


_ZONE_DIR = re.compile(r"^(intel-rapl|amd-rapl)(:\d+)+$")


class RaplSource:
    """RAPL through the powercap sysfs tree (Intel ``intel-rapl``, AMD ``amd-rapl``).

    Zones published: each ``package-N`` and its ``dram`` subzone count towards the total;
    ``core``/``uncore`` (contained in the package) and ``psys`` (contains the packages) are
    published for information with ``in_total=False``; ``intel-rapl-mmio`` zones duplicate
    the package and are skipped.  Nothing is ever summed twice.
    """

    name = "rapl"

    def __init__(self, root: str | Path = "/sys/class/powercap") -> None:
        self.root = Path(root)
        self._zones = self._discover()
        self._last_mono: int | None = None

    def _discover(self) -> list[_RaplZone]:
        if not self.root.is_dir():
            raise SourceUnavailable(f"no powercap tree at {self.root} (no RAPL on this host)")
        found: list[_RaplZone] = []
        seen: set[Path] = set()
        for entry in sorted(self.root.iterdir()):
            if not _ZONE_DIR.match(entry.name):
                continue  # skips intel-rapl-mmio:* (a duplicate of the package) and controls
            real = entry.resolve()
            if real in seen:
                continue
            seen.add(real)
            try:
                raw_name = (entry / "name").read_text().strip()
            except OSError:
                continue
            depth = entry.name.count(":")
            kind, label, in_total = self._classify(raw_name, entry.name, depth)
            if kind is None:
                continue
            energy = entry / "energy_uj"
            try:
                max_range = int((entry / "max_energy_range_uj").read_text().strip())
            except (OSError, ValueError):
                max_range = 2**32 - 1
            found.append(
                _RaplZone(label, kind, energy, in_total, CounterTracker(max_range_uj=max_range))
            )
        if not found:
            raise SourceUnavailable(f"powercap tree at {self.root} has no RAPL zones")
        for z in found:
            try:
                z.path.read_text()
            except PermissionError as e:
                raise SourceUnavailable(f"cannot read {z.path}: {PERMISSION_HINT}") from e
            except OSError as e:
                raise SourceUnavailable(f"cannot read {z.path}: {e}") from e
        # psys is only in_total when there is no package zone at all
        if not any(z.kind == "package" for z in found):
            for z in found:
                if z.kind == "psys":
                    z.in_total = True
        return found

    @staticmethod
    def _classify(raw: str, dirname: str, depth: int) -> tuple[str | None, str, bool]:
        ids = dirname.split(":")[1:]
        if raw.startswith("package"):
            return "package", raw if "-" in raw else f"package-{ids[0]}", True
        if raw == "psys":
            return "psys", "psys", False
        if raw == "dram":
            return "dram", f"dram-{ids[0]}", True
        if raw in ("core", "uncore"):
            return raw, f"{raw}-{ids[0]}", False
        return None, raw, False

    def zones(self) -> list[Zone]:
        return [
            Zone(name=z.name, kind=z.kind, source="rapl", basis="measured", scope="component",
                 in_total=z.in_total)  # type: ignore[arg-type]
            for z in self._zones
        ]

    def read(self, mono_ns: int) -> Reading:
        energy: dict[str, float] = {}
        power: dict[str, float] = {}
        ambiguous: list[str] = []
        dt = (mono_ns - self._last_mono) / 1e9 if self._last_mono is not None else None
        for z in self._zones:
            try:
                raw = int(z.path.read_text().strip())
            except PermissionError as e:
                raise SourceUnavailable(f"cannot read {z.path}: {PERMISSION_HINT}") from e
            j, amb = z.tracker.update(raw, mono_ns)
            energy[z.name] = j
            if amb:
                ambiguous.append(z.name)
            if dt and z.last_j is not None and dt > 0:
                power[z.name] = max(0.0, (j - z.last_j) / dt)
            z.last_j = j
        self._last_mono = mono_ns
        return Reading(energy, power, ambiguous)


class EstimateSource:
    """CPU-time model of host power, labelled ``estimated`` (see docs/power.md)."""

    name = "estimate"
    ZONE = "cpu"

    def __init__(
        self,
        idle_w: float | None = None,
        max_w: float | None = None,
        proc_stat: str | Path = "/proc/stat",
    ) -> None:
        d_idle, d_max = default_estimate_watts(os.cpu_count() or 1)
        idle = d_idle if idle_w is None else idle_w
        mx = d_max if max_w is None else max_w
        if not 0 <= idle <= mx:
            raise ValueError(f"estimate needs 0 <= idle_w ({idle}) <= max_w ({mx})")
        self.proc_stat = Path(proc_stat)
        self.model = CpuTimeEstimator(idle_w=idle, max_w=mx)

    def zones(self) -> list[Zone]:
        return [Zone(name=self.ZONE, kind="cpu_estimate", source="estimate", basis="estimated",
                     scope="component", in_total=True)]

    def read(self, mono_ns: int) -> Reading:
        times = parse_proc_stat(self.proc_stat.read_text())
        j, p = self.model.update(times, mono_ns)
        return Reading({self.ZONE: j}, {self.ZONE: p} if p is not None else {})


def open_source(
    kind: str, powercap_root: str, idle_w: float | None, max_w: float | None
) -> tuple[RaplSource | EstimateSource, str]:
    """Open the requested source; ``auto`` picks the best available and says why."""
    if kind == "rapl":
        return RaplSource(powercap_root), "rapl (requested)"
    if kind == "estimate":
        return EstimateSource(idle_w, max_w), "estimate (requested)"
    if kind == "auto":
        try:
            return RaplSource(powercap_root), "rapl (auto: powercap readable)"
        except SourceUnavailable as e:
            return EstimateSource(idle_w, max_w), f"estimate (auto: {e})"
    raise SourceUnavailable(f"unknown power source {kind!r}")
