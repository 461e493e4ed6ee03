"""The training record: one encode, joined from every part the dataset knows about it.

A :class:`DatasetRecord` is what models are trained on and what the advisor ranks.  It is
built either from the pipeline's own topics (``scenario.energy`` + ``quality.results`` +
``cost.results``) or from an import (``joulestream import``: external CSV/JSONL
measurements or the previous project's results JSON).  Every energy figure keeps its
basis (measured/estimated) and its source.  Pure code: no I/O here.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import Field

from schemas._base import Basis, Event, Name, NonNegFloat, Scope
from schemas.cost_results import CostResult
from schemas.quality_results import QualityResult
from schemas.scenario_energy import ScenarioEnergy
from schemas.scenario_events import EncodeSettings, HardwareInfo

Origin = Literal["pipeline", "import", "legacy"]
Text = Annotated[str, Field(max_length=4096)]


class DatasetRecord(Event):
    """One encode with whatever parts are known.  Units are in the field names.

    ``energy_j`` is the energy of the whole encode window (all streams); it is ``None``
    while unknown (e.g. a legacy scenario not yet enriched from Prometheus).
    ``energy_complete`` is False when the energy window was not fully covered by samples.
    """

    scenario_id: Name
    origin: Origin
    origin_ref: Text = ""  # where it came from: "file.csv:12", "legacy.json#3", topic
    host: Name
    settings: EncodeSettings
    hardware: HardwareInfo | None = None
    clip: Text = ""  # source content id; CV can hold out whole clips
    wall_s: NonNegFloat | None = None
    energy_j: NonNegFloat | None = None
    energy_basis: Basis | None = None
    energy_source: Text = ""  # "rapl", "estimate", "prometheus:rapl_energy_joules_total", ...
    energy_scope: Scope = "component"
    energy_complete: bool = True
    energy_coverage: float = Field(default=1.0, ge=0.0, le=1.0)
    mean_power_w: NonNegFloat | None = None
    cpu_s: NonNegFloat | None = None
    frames: int | None = Field(default=None, ge=0)
    encode_fps: NonNegFloat | None = None  # frames encoded per wall second
    bitrate_kbps: NonNegFloat | None = None  # achieved output bitrate per stream
    vmaf: NonNegFloat | None = None
    vmaf_model: Text = ""
    psnr_y: float | None = None
    cost_total: NonNegFloat | None = None
    currency: Text = ""
    carbon_g: NonNegFloat | None = None

    @property
    def hardware_class(self) -> str:
        return self.hardware.hardware_class if self.hardware else "unknown"


def hardware_class_of(cpu_model: str, logical_cpus: int, arch: str) -> str:
    """The same deterministic id as ``shared.hardware.host_hardware`` computes."""
    return hashlib.sha256(f"{cpu_model}|{logical_cpus}|{arch}".encode()).hexdigest()[:12]


def from_pipeline(energy: ScenarioEnergy | None, quality: QualityResult | None,
                  cost: CostResult | None) -> DatasetRecord | None:
    """Join the pipeline's parts; ``None`` until the energy part (which carries the
    settings) has arrived."""
    if energy is None:
        return None
    s = energy.settings
    bitrate = None
    if energy.output_bytes is not None and s.duration_s > 0:
        bitrate = energy.output_bytes * 8 / 1000 / s.duration_s / s.streams
    fps = energy.achieved_fps
    if fps is None and energy.frames and energy.wall_s > 0:
        fps = energy.frames / energy.wall_s
    return DatasetRecord(
        scenario_id=energy.scenario_id, origin="pipeline", origin_ref="scenario.energy",
        host=energy.host, settings=s, hardware=energy.hardware, clip=_clip_name(s.source),
        wall_s=energy.wall_s, energy_j=energy.energy_j, energy_basis=energy.basis,
        energy_source="+".join(energy.sources), energy_scope=energy.scope,
        energy_complete=energy.complete, energy_coverage=energy.coverage,
        mean_power_w=energy.mean_power_w, cpu_s=energy.cpu_s, frames=energy.frames or None,
        encode_fps=fps, bitrate_kbps=bitrate,
        vmaf=quality.vmaf if quality else None,
        vmaf_model=quality.vmaf_model if quality else "",
        psnr_y=quality.psnr_y if quality else None,
        cost_total=cost.total_cost if cost else None,
        currency=cost.currency if cost else "",
        carbon_g=cost.carbon_g if cost else None,
    )


def _clip_name(source: str) -> str:
    return source.replace("\\", "/").rsplit("/", 1)[-1]


def state_of(rec: DatasetRecord | None, waiting_for: str = "energy") -> tuple[str, str]:
    """('complete'|'waiting'|'incomplete', reason).

    *complete*: energy over a fully covered window and a quality score - trainable.
    *waiting*: a part may still arrive (energy, quality).
    *incomplete*: it never will be trainable as is (idle window, uncovered energy window,
    an import without quality).
    """
    if rec is None:
        return "waiting", f"waiting for {waiting_for}"
    if rec.settings.is_idle:
        return "incomplete", "idle baseline (not an encode)"
    if rec.energy_j is None:
        if rec.origin == "legacy":
            return "waiting", "legacy scenario: energy not yet enriched from Prometheus"
        return "waiting", "waiting for energy"
    if not rec.energy_complete:
        return "incomplete", f"energy window only {rec.energy_coverage:.0%} covered by samples"
    if rec.vmaf is None:
        if rec.origin == "pipeline":
            return "waiting", "waiting for quality"
        what = "imported" if rec.origin == "import" else "legacy scenario"
        return "incomplete", f"{what} without quality (no VMAF)"
    return "complete", "complete"
