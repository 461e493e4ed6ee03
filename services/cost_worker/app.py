"""cost_worker: scenario.energy → cost.results (money and carbon per scenario)."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import ValidationError

from schemas import cost_results, scenario_energy
from schemas.cost_results import CostResult
from schemas.scenario_energy import ScenarioEnergy
from shared.kafka import BadInput, Output
from shared.validation import describe_validation_error

from .config import PriceBook
from .logic import compute_cost


def cost_for(e: ScenarioEnergy, book: PriceBook) -> CostResult:
    s = e.settings
    pixels = float(s.width * s.height * e.frames) if e.frames and s.width else None
    content_s = s.duration_s * s.streams if s.duration_s else None
    c = compute_cost(e.energy_j, e.cpu_s, book.energy_price_per_kwh,
                     book.compute_price_per_vcpu_hour, book.carbon_g_per_kwh, book.pue,
                     book.wall_factor if e.scope == "component" else 1.0, pixels, content_s)
    return CostResult(
        scenario_id=e.scenario_id, host=e.host, currency=book.currency, energy_j=e.energy_j,
        energy_basis=e.basis, energy_scope=e.scope, billed_energy_kwh=c.billed_energy_kwh,
        energy_cost=c.energy_cost, compute_cost=c.compute_cost, total_cost=c.total_cost,
        carbon_g=c.carbon_g, price_per_kwh=book.energy_price_per_kwh,
        carbon_intensity_g_per_kwh=book.carbon_g_per_kwh, pue=book.pue,
        wall_factor=book.wall_factor if e.scope == "component" else 1.0, price_book=book.name,
        cost_per_megapixel=c.cost_per_megapixel, cost_per_content_hour=c.cost_per_content_hour,
    )


class CostProcessor:
    name = "cost_worker"
    input_topics: Sequence[str] = (scenario_energy.TOPIC,)

    def __init__(self, registry: CollectorRegistry, book: PriceBook | None = None) -> None:
        self.book = book or PriceBook()
        p = "joulestream_cost_worker"
        self.cost = Histogram(f"{p}_scenario_cost", f"Total cost per scenario ({self.book.currency})",
                              ["codec", "basis"], registry=registry,
                              buckets=(1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1, 10))
        self.carbon = Counter(f"{p}_carbon_grams_total", "gCO2e of scored scenarios",
                              ["codec", "basis"], registry=registry)

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        try:
            e = ScenarioEnergy.from_bytes(record.value or b"")
        except ValidationError as err:
            raise BadInput(describe_validation_error(err), "schema") from err
        except (UnicodeDecodeError, ValueError) as err:
            raise BadInput(f"undecodable message: {err}", "decode") from err
        if e.settings.is_idle:
            return []
        res = cost_for(e, self.book)
        self.cost.labels(e.settings.codec, e.basis).observe(res.total_cost)
        self.carbon.labels(e.settings.codec, e.basis).inc(res.carbon_g)
        return [Output(cost_results.TOPIC, e.scenario_id.encode(), res.to_bytes())]

    def tick(self, now_ns: int) -> list[Output]:
        return []

    def safe_offsets(self) -> dict[TopicPartition, int] | None:
        return None

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        pass
