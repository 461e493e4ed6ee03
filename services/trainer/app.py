"""trainer: builds the dataset from scenario.energy + quality.results + cost.results and
trains models; publishes model.updates."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Gauge
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import cost_results, model_updates, quality_results, scenario_energy
from schemas.cost_results import CostResult
from schemas.model_updates import CvScore, ModelUpdate
from schemas.quality_results import QualityResult
from schemas.scenario_energy import ScenarioEnergy
from shared.kafka import BadInput, Output
from shared.validation import describe_validation_error

from .model import FEATURES, TARGETS, NotEnoughData, save_model, train_target
from .store import DatasetStore

log = logging.getLogger("trainer")


class TrainerConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOULESTREAM_TRAINER_", frozen=True,
                                      extra="ignore")

    data_dir: str = "joulestream-data/trainer"
    #: retrain after this many new complete records (0 = only when asked)
    retrain_every: int = 20
    min_records: int = 4


_DECODERS: dict[str, type[BaseModel]] = {
    scenario_energy.TOPIC: ScenarioEnergy,
    quality_results.TOPIC: QualityResult,
    cost_results.TOPIC: CostResult,
}


class TrainerProcessor:
    name = "trainer"
    input_topics: Sequence[str] = tuple(_DECODERS)

    def __init__(self, registry: CollectorRegistry, cfg: TrainerConfig | None = None) -> None:
        self.cfg = cfg or TrainerConfig()
        self.store = DatasetStore(Path(self.cfg.data_dir) / "dataset.sqlite")
        self.train_requested = False
        self.last_trained_complete = 0
        self.last_error: str | None = None
        p = "joulestream_trainer"
        self.g_records = Gauge(f"{p}_dataset_records", "Dataset records by state", ["state"],
                               registry=registry)
        self.g_mae = Gauge(f"{p}_model_cv_mae", "Grouped-CV mean absolute error", ["target"],
                           registry=registry)
        self.g_mape = Gauge(f"{p}_model_cv_mape_ratio", "Grouped-CV mean absolute % error",
                            ["target"], registry=registry)
        self.g_last = Gauge(f"{p}_last_training_timestamp_seconds", "Last successful training",
                            registry=registry)
        self._refresh_status()

    def _refresh_status(self) -> None:
        st = self.store.status()
        self.g_records.labels("complete").set(st.complete)
        self.g_records.labels("waiting").set(st.waiting)
        self.g_records.labels("incomplete").set(st.incomplete)

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        cls = _DECODERS[record.topic]
        try:
            obj = cls.model_validate_json(record.value or b"")
        except ValidationError as e:
            raise BadInput(describe_validation_error(e), "schema") from e
        now = time.time_ns()
        if isinstance(obj, ScenarioEnergy):
            self.store.put_energy(obj, now)
        elif isinstance(obj, QualityResult):
            self.store.put_quality(obj, now)
        elif isinstance(obj, CostResult):
            self.store.put_cost(obj, now)
        return []

    def train(self) -> list[ModelUpdate]:
        """Train every target on the complete records; raises NotEnoughData with reasons."""
        rows = self.store.complete_rows()
        st = self.store.status()
        if len(rows) < self.cfg.min_records:
            why = ", ".join(f"{n} {r}" for r, n in sorted(st.reasons.items())) or "no records"
            raise NotEnoughData(
                f"{st.complete} complete records, need {self.cfg.min_records} "
                f"({st.waiting} waiting, {st.incomplete} incomplete: {why})")
        ds_hash = self.store.snapshot_hash(rows)
        updates = []
        for target, unit in TARGETS.items():
            tm = train_target(rows, target, self.cfg.min_records)
            path, sha = save_model(tm, Path(self.cfg.data_dir) / "models", ds_hash)
            cv = CvScore(mae=tm.cv.mae, mape=tm.cv.mape, folds=tm.cv.folds,
                         grouping="settings_family")
            base = (CvScore(mae=tm.baseline_cv.mae, mape=tm.baseline_cv.mape,
                            folds=tm.baseline_cv.folds, grouping="settings_family")
                    if tm.baseline_cv else None)
            updates.append(ModelUpdate(
                model_id=path.stem, target=target, unit=unit, algorithm=tm.algorithm,
                features=FEATURES, n_samples=tm.n_samples, cv=cv, baseline_cv=base,
                hardware="global", dataset_hash=ds_hash, path=str(path), sha256=sha,
                trained_at_ns=time.time_ns()))
            self.g_mae.labels(target).set(tm.cv.mae)
            self.g_mape.labels(target).set(tm.cv.mape)
        self.g_last.set(time.time())
        self.last_trained_complete = len(rows)
        return updates

    def tick(self, now_ns: int) -> list[Output]:
        self._refresh_status()
        st = self.store.status()
        due = self.cfg.retrain_every > 0 and (
            st.complete - self.last_trained_complete >= self.cfg.retrain_every)
        if not (self.train_requested or due):
            return []
        self.train_requested = False
        try:
            updates = self.train()
        except NotEnoughData as e:
            self.last_error = str(e)
            log.warning("not training: %s", e)
            self.last_trained_complete = st.complete
            return []
        self.last_error = None
        return [Output(model_updates.TOPIC, u.target.encode(), u.to_bytes()) for u in updates]

    def safe_offsets(self) -> dict[TopicPartition, int] | None:
        return None

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        pass
