"""Polled power sources: thin readers of the host's interfaces (powercap sysfs, NVML,
/proc/stat).  The smart plug, which pushes, lives in ``mqtt.py``.

Each source declares its zones once (``zones()``) and then returns one reading per call to
``read(mono_ns)``: cumulative joules and interval power per zone.  ``read`` is the hot path
(10-100 Hz): plain dicts and floats only, no validation there.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from schemas.power_samples import Zone

from .logic import CounterTracker, CpuTimeEstimator, default_estimate_watts, parse_proc_stat

log = logging.getLogger("power_collector")


class SourceUnavailable(RuntimeError):
    """The source cannot be used on this host; the message says why and how to fix it."""


@dataclass
class Reading:
    energy_j: dict[str, float]
    power_w: dict[str, float]
    wrap_ambiguous: list[str] = field(default_factory=list)
    #: NVENC utilisation per GPU zone, percent over the driver's sampling period
    encoder_util_pct: dict[str, float] = field(default_factory=dict)


class PolledSource(Protocol):
    name: str

    def zones(self) -> list[Zone]: ...

    def read(self, mono_ns: int) -> Reading: ...

    def close(self) -> None: ...


PERMISSION_HINT = (
    "energy_uj is readable only by root since Linux 5.10 (CVE-2020-8694, 'Platypus'). Fixes: "
    "run the collector as root; or add a udev rule / sysfsutils entry that makes "
    "/sys/class/powercap/*/energy_uj group-readable (e.g. chmod 0440 + chgrp power); or grant "
    "CAP_DAC_READ_SEARCH to the collector; in a container, mount the host's /sys/class/powercap "
    "read-only (-v /sys/class/powercap:/sys/class/powercap:ro) and run it as root"
)

MASKED_HINT = (
    "container runtimes (Docker/moby, Podman, Kubernetes since 2024) mask "
    "/sys/devices/virtual/powercap by default: mount the host's /sys/class/powercap and "
    "/sys/devices/virtual/powercap read-only into the container"
)


@dataclass
class _RaplZone:
    name: str
    kind: str
    path: Path
    in_total: bool
    tracker: CounterTracker
    last_j: float | None = None
    fspath: str = ""

    def __post_init__(self) -> None:
        self.fspath = str(self.path)


_ZONE_DIR = re.compile(r"^(intel-rapl|intel-rapl-mmio|amd-rapl)((?::\d+)+)$")


class RaplSource:
    """RAPL through the powercap sysfs tree, Intel (``intel-rapl``) and AMD.

    AMD Zen parts appear under the same ``intel-rapl`` control type on mainline kernels
    (package-N and core subzones, no dram/psys); an ``amd-rapl`` control type is accepted
    too.  Zones published: each ``package-N`` (also ``package-N-die-M`` on multi-die parts)
    and its ``dram`` subzone count towards the total; ``core``/``uncore`` (inside the package)
    and ``psys`` (contains the packages) are published with ``in_total=False``.  A machine
    that exposes psys but no package counts psys alone.  ``intel-rapl-mmio`` zones duplicate
    a package of the MSR interface and are skipped, unless their package is not exposed
    otherwise.  Nothing is ever summed twice.
    """

    name = "rapl"

    def __init__(self, root: str | Path = "/sys/class/powercap") -> None:
        self.root = Path(root)
        self._zones = self._discover()
        self._last_mono: int | None = None

    def _discover(self) -> list[_RaplZone]:
        if not self.root.is_dir():
            raise SourceUnavailable(f"no powercap tree at {self.root} (no RAPL on this host)")
        entries: list[tuple[int, str, Path, str, list[str]]] = []
        seen: set[Path] = set()
        dangling = 0
        for entry in sorted(self.root.iterdir()):
            m = _ZONE_DIR.match(entry.name)
            if not m:
                continue
            real = entry.resolve()
            if real in seen:
                continue
            seen.add(real)
            try:
                raw_name = (entry / "name").read_text().strip()
            except OSError:
                dangling += 1
                continue
            mmio = 1 if m.group(1) == "intel-rapl-mmio" else 0
            entries.append((mmio, m.group(1), entry, raw_name, m.group(2)[1:].split(":")))
        names = {(ctl, tuple(ids)): n for _, ctl, _, n, ids in entries}
        found: list[_RaplZone] = []
        labels: set[str] = set()
        for mmio, ctl, entry, raw_name, ids in sorted(entries, key=lambda e: (e[0], e[2].name)):
            parent = names.get((ctl, tuple(ids[:1]))) if len(ids) > 1 else None
            kind, label, in_total = self._classify(raw_name, ids, parent)
            if kind is None:
                log.info("powercap zone %s (%s) not used", entry.name, raw_name)
                continue
            if mmio:
                if kind != "package" or label in labels:
                    continue  # the MMIO interface duplicates a package already read
            if label in labels:
                label = f"{label}@{entry.name}"
            labels.add(label)
            try:
                max_range = int((entry / "max_energy_range_uj").read_text().strip())
            except (OSError, ValueError):
                max_range = 2**32 - 1
            found.append(_RaplZone(label, kind, entry / "energy_uj", in_total,
                                   CounterTracker(max_range_uj=max_range)))
        if not found:
            why = f"; {dangling} zone link(s) lead nowhere: {MASKED_HINT}" if dangling else ""
            raise SourceUnavailable(f"powercap tree at {self.root} has no RAPL zones{why}")
        for z in found:
            try:
                int(z.path.read_text().strip())
            except PermissionError as e:
                raise SourceUnavailable(f"cannot read {z.path}: {PERMISSION_HINT}") from e
            except (OSError, ValueError) as e:
                raise SourceUnavailable(f"cannot read {z.path}: {e}") from e
        # psys contains everything else: it is the total only where no package is exposed
        if not any(z.kind == "package" for z in found):
            psys = [z for z in found if z.kind == "psys"]
            if psys:
                for z in found:
                    z.in_total = z.kind == "psys"
        return found

    @staticmethod
    def _classify(raw: str, ids: list[str], parent: str | None) -> tuple[str | None, str, bool]:
        if raw.startswith("package"):
            return "package", raw if "-" in raw else f"package-{ids[0]}", True
        if raw == "psys":
            return "psys", "psys", False
        # subzones are named after their package: dram of package-1 is dram-1
        suffix = parent.removeprefix("package-") if parent and parent.startswith("package-") \
            else ids[0]
        if raw == "dram":
            return "dram", f"dram-{suffix}", True
        if raw in ("core", "uncore"):
            return raw, f"{raw}-{suffix}", False
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
        last = self._last_mono
        dt = (mono_ns - last) / 1e9 if last is not None and mono_ns > last else None
        for z in self._zones:
            try:  # os-level calls: a third of the cost of open(); sysfs reads are atomic
                fd = os.open(z.fspath, os.O_RDONLY)
                try:
                    raw = int(os.read(fd, 64))
                finally:
                    os.close(fd)
            except PermissionError as e:
                raise SourceUnavailable(f"cannot read {z.path}: {PERMISSION_HINT}") from e
            j, amb = z.tracker.update(raw, mono_ns)
            energy[z.name] = j
            if amb:
                ambiguous.append(z.name)
            if dt and z.last_j is not None:
                power[z.name] = max(0.0, (j - z.last_j) / dt)
            z.last_j = j
        self._last_mono = mono_ns
        return Reading(energy, power, ambiguous)

    def close(self) -> None:
        pass


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

    def close(self) -> None:
        pass


class CombinedSource:
    """Several polled component sources read together as one stream (e.g. RAPL + NVML:
    CPU packages, DRAM and GPUs do not overlap, so their joules add up)."""

    def __init__(self, parts: list[PolledSource]) -> None:
        if not parts:
            raise ValueError("no sources")
        self.parts = parts
        self.name = "+".join(p.name for p in parts)
        zones = [z for p in parts for z in p.zones()]
        if len({z.name for z in zones}) != len(zones):
            raise ValueError("zone names collide between sources")
        self._zones = zones

    def zones(self) -> list[Zone]:
        return list(self._zones)

    def read(self, mono_ns: int) -> Reading:
        if len(self.parts) == 1:
            return self.parts[0].read(mono_ns)
        out = Reading({}, {})
        for p in self.parts:
            r = p.read(mono_ns)
            out.energy_j.update(r.energy_j)
            out.power_w.update(r.power_w)
            out.wrap_ambiguous.extend(r.wrap_ambiguous)
            out.encoder_util_pct.update(r.encoder_util_pct)
        return out

    def close(self) -> None:
        for p in self.parts:
            p.close()


def open_component_sources(
    names: list[str], powercap_root: str, idle_w: float | None, max_w: float | None,
    nvml: object | None = None,
) -> tuple[CombinedSource | None, list[str]]:
    """Open the polled (component) sources of a collector.

    ``names`` empty means ``auto``: RAPL if readable, else the CPU-time estimate, plus NVML
    GPUs when the library and a GPU are present.  Explicit names must all open, else
    ``SourceUnavailable``.  Returns the combined source (None when only a plug was asked
    for) and one line per decision, for the log and the info metric.
    """
    from .nvml import NvmlSource  # local: pynvml is an optional extra

    parts: list[PolledSource] = []
    why: list[str] = []
    if not names:
        try:
            parts.append(RaplSource(powercap_root))
            why.append("rapl (auto: powercap readable)")
        except SourceUnavailable as e:
            parts.append(EstimateSource(idle_w, max_w))
            why.append(f"estimate (auto: RAPL unavailable: {e})")
        try:
            parts.append(NvmlSource(nvml))
            why.append("nvml (auto: NVIDIA GPU found)")
        except SourceUnavailable as e:
            why.append(f"no nvml (auto: {e})")
    else:
        for n in names:
            if n == "rapl":
                parts.append(RaplSource(powercap_root))
            elif n == "estimate":
                parts.append(EstimateSource(idle_w, max_w))
            elif n == "nvml":
                parts.append(NvmlSource(nvml))
            else:
                continue
            why.append(f"{n} (requested)")
    return (CombinedSource(parts) if parts else None), why


def open_source(
    kind: str, powercap_root: str, idle_w: float | None, max_w: float | None
) -> tuple[PolledSource, str]:
    """Open one component source (``auto``: RAPL, else the estimate) and say why."""
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
