"""cost_worker: scenario.energy → cost.results (money and carbon per scenario).

It also reads ``quality.results`` (co-partitioned with ``scenario.energy`` by scenario id)
only to observe the quality-dependent efficiency metrics (VMAF per kJ, quality-weighted
pixels per joule); ``cost.results`` stays a pure function of ``scenario.energy`` and the
price book.  The small join for metrics is held in memory, bounded, and not replayed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from schemas import cost_results, quality_results, scenario_energy
from schemas.cost_results import CostResult
from schemas.quality_results import QualityResult
from schemas.scenario_energy import ScenarioEnergy
from shared.efficiency import pixels_encoded, quality_weighted_pixels_per_joule, vmaf_per_kj
from shared.kafka import BadInput, Output
from shared.validation import describe_validation_error

from .config import PriceBook
from .logic import ScenarioInputs, scenario_cost
from .metrics import CostMetrics

_T = TypeVar("_T", ScenarioEnergy, QualityResult)

#: scenarios waiting for their other half of the metrics join (each side)
MAX_PENDING = 10_000


def cost_for(e: ScenarioEnergy, book: PriceBook) -> CostResult:
    """The cost record of one scenario: a pure function of the energy record and the book."""
    s = e.settings
    prices = book.prices_for(e.host)
    # money and carbon are paid at the wall: when a smart plug covered the whole window,
    # bill its measurement instead of component energy × a configured wall factor
    if e.wall_energy_j is not None and (e.wall_coverage or 0.0) >= 0.999:
        energy_j, scope, basis, sources = e.wall_energy_j, "wall", "measured", ["mqtt_plug"]
    else:
        energy_j, scope, basis, sources = e.energy_j, e.scope, e.basis, list(e.sources)
    c = scenario_cost(ScenarioInputs(
        codec=s.codec, width=s.width, height=s.height, frames=e.frames,
        duration_s=s.duration_s, streams=s.streams, start_ns=e.start_ns, wall_s=e.wall_s,
        cpu_s=e.cpu_s, energy_j=energy_j, scope=scope, output_bytes=e.output_bytes),
        prices, book.audience_views)
    return CostResult(
        scenario_id=e.scenario_id, host=e.host, currency=book.currency, energy_j=energy_j,
        energy_basis=basis, energy_scope=scope,  # type: ignore[arg-type]
        billed_energy_kwh=c.billed_energy_kwh,
        energy_cost=c.energy_cost, compute_cost=c.compute_cost, total_cost=c.total_cost,
        carbon_g=c.carbon_g, price_per_kwh=c.price_per_kwh,
        carbon_intensity_g_per_kwh=prices.carbon_g_per_kwh, pue=prices.pue,
        wall_factor=c.wall_factor, price_book=book.name,
        cost_per_megapixel=c.cost_per_megapixel, cost_per_content_hour=c.cost_per_content_hour,
        region=prices.region, energy_sources=sources, price_band=c.price_band,
        carbon_intensity_source=prices.carbon_source, compute_basis=c.compute_basis,
        compute_hours=c.compute_hours, gpu_hours=c.gpu_hours, gpu_cost=c.gpu_cost,
        megapixels=c.megapixels, content_hours=c.content_hours,
        pixels_per_joule=c.pixels_per_joule, output_bitrate_kbps=c.output_bitrate_kbps,
        delivery_gb_per_viewer_hour=c.delivery_gb_per_viewer_hour,
        egress_price_per_gb=prices.egress_price_per_gb,
        delivery_cost_per_viewer_hour=c.delivery_cost_per_viewer_hour,
        audience_views=book.audience_views,
        encode_cost_per_viewer_hour=c.encode_cost_per_viewer_hour,
        cost_per_viewer_hour=c.cost_per_viewer_hour,
    )


@dataclass(frozen=True)
class _EnergySide:
    labels: tuple[str, str, str, str]
    pixels: float | None
    energy_j: float


class CostProcessor:
    name = "cost_worker"
    input_topics: Sequence[str] = (scenario_energy.TOPIC, quality_results.TOPIC)

    def __init__(self, registry: CollectorRegistry, book: PriceBook | None = None) -> None:
        self.book = book or PriceBook()
        self.metrics = CostMetrics(registry)
        self._energy: OrderedDict[str, _EnergySide] = OrderedDict()
        self._vmaf: OrderedDict[str, float] = OrderedDict()

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        if record.topic == quality_results.TOPIC:
            q = _decode(QualityResult, record.value)
            self._remember(self._vmaf, q.scenario_id, q.vmaf)
            self._join(q.scenario_id)
            return []
        e = _decode(ScenarioEnergy, record.value)
        if e.settings.is_idle:
            return []
        res = cost_for(e, self.book)
        labels = self.metrics.labels_of(e.settings, e.basis)
        self.metrics.observe_cost(labels, res)
        self._remember(self._energy, e.scenario_id, _EnergySide(
            labels, pixels_encoded(e.settings.width, e.settings.height, e.frames), e.energy_j))
        self._join(e.scenario_id)
        return [Output(cost_results.TOPIC, e.scenario_id.encode(), res.to_bytes())]

    @staticmethod
    def _remember(d: OrderedDict, key: str, value: object) -> None:  # type: ignore[type-arg]
        d[key] = value
        d.move_to_end(key)
        while len(d) > MAX_PENDING:
            d.popitem(last=False)

    def _join(self, sid: str) -> None:
        if sid in self._energy and sid in self._vmaf:
            side, vmaf = self._energy.pop(sid), self._vmaf.pop(sid)
            self.metrics.observe_quality(
                side.labels, vmaf_per_kj(vmaf, side.energy_j),
                quality_weighted_pixels_per_joule(side.pixels, vmaf, side.energy_j))

    def tick(self, now_ns: int) -> list[Output]:
        return []

    def safe_offsets(self) -> dict[TopicPartition, int] | None:
        return None

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        pass


def _decode(model: type[_T], raw: bytes | None) -> _T:
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as err:
        raise BadInput(describe_validation_error(err), "schema") from err
    except (UnicodeDecodeError, ValueError) as err:
        raise BadInput(f"undecodable message: {err}", "decode") from err
