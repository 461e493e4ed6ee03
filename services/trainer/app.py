"""trainer: builds the dataset from scenario.energy + quality.results + cost.results and
trains models; publishes model.updates.

Retraining happens when asked (``train_requested``), after ``retrain_every`` new complete
records, or when the current models' error on records they have not seen *drifts*: their
MAPE on >= ``drift_min_records`` new complete records exceeds ``drift_factor`` × the
grouped-CV MAPE the model was published with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import cost_results, model_updates, quality_results, scenario_energy
from schemas.cost_results import CostResult
from schemas.model_updates import CvScore, IntervalScore, ModelUpdate
from schemas.quality_results import QualityResult
from schemas.scenario_energy import ScenarioEnergy
from shared.kafka import BadInput, Output
from shared.validation import describe_validation_error

from .model import TARGETS, NotEnoughData, predict_one, train_all
from .registry import ModelRegistry
from .store import DatasetStore

log = logging.getLogger("trainer")


class TrainerConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOULESTREAM_TRAINER_", frozen=True,
                                      extra="ignore")

    data_dir: str = "joulestream-data/trainer"
    #: retrain after this many new complete records (0 = only when asked)
    retrain_every: int = 20
    min_records: int = 4
    #: retrain when error on unseen records exceeds this multiple of the CV error (0 = off)
    drift_factor: float = 2.0
    drift_min_records: int = 3


_DECODERS: dict[str, type[BaseModel]] = {
    scenario_energy.TOPIC: ScenarioEnergy,
    quality_results.TOPIC: QualityResult,
    cost_results.TOPIC: CostResult,
}


def _cv(d: dict[str, Any] | None) -> CvScore | None:
    if not d:
        return None
    return CvScore(mae=d["mae"], mape=d["mape"], folds=d["folds"], grouping=d["grouping"])


def update_of(meta: dict[str, Any]) -> ModelUpdate:
    """Registry metadata → the model.updates event."""
    iv = meta.get("interval")
    cv = _cv(meta["cv"])
    assert cv is not None
    return ModelUpdate(
        model_id=meta["model_id"], target=meta["target"], unit=meta["unit"],
        algorithm=meta["algorithm"], features=meta["features"], n_samples=meta["n_samples"],
        cv=cv, baseline_cv=_cv(meta.get("baseline_cv")), hardware=meta["hardware"],
        dataset_hash=meta["snapshot_id"], path=meta["path"], sha256=meta["sha256"],
        trained_at_ns=meta["trained_at_ns"], version=meta["version"],
        interval=None if iv is None else IntervalScore(
            level=iv["level"], half_width=iv["half_width"], log_scale=iv["log_scale"],
            method="split-conformal", measured_coverage=iv["measured_coverage"],
            coverage_n=iv["coverage_n"]))


def train_and_register(store: DatasetStore, registry: ModelRegistry, min_records: int,
                       now_ns: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Snapshot the complete records, train every target (global + per hardware class),
    register the models.  Raises NotEnoughData (with the dataset's reasons) when nothing
    can be trained."""
    st = store.status()
    snap = store.snapshot(now_ns)
    if len(snap.records) < min_records:
        why = ", ".join(f"{n} {r}" for r, n in sorted(st.reasons.items())) or "no records"
        raise NotEnoughData(
            f"{st.complete} complete records, need {min_records} "
            f"({st.waiting} waiting, {st.incomplete} incomplete: {why})")
    models, skipped = train_all(snap.records, min_records)
    if not models:
        raise NotEnoughData("no target could be trained: " + "; ".join(
            f"{k}: {v}" for k, v in skipped.items()))
    metas = [registry.register(tm, snap.snapshot_id, now_ns) for tm in models]
    return metas, skipped


class TrainerProcessor:
    name = "trainer"
    input_topics: Sequence[str] = tuple(_DECODERS)

    def __init__(self, registry: CollectorRegistry, cfg: TrainerConfig | None = None) -> None:
        self.cfg = cfg or TrainerConfig()
        self.store = DatasetStore(Path(self.cfg.data_dir) / "dataset.sqlite")
        self.models = ModelRegistry(Path(self.cfg.data_dir) / "models")
        self.train_requested = False
        self.last_trained_complete = 0
        self.last_error: str | None = None
        self.last_skipped: dict[str, str] = {}
        self._trained_ids: set[str] = set()
        self._dirty = True
        p = "joulestream_trainer"
        self.g_records = Gauge(f"{p}_dataset_records", "Dataset records by state", ["state"],
                               registry=registry)
        self.g_mae = Gauge(f"{p}_model_cv_mae", "Grouped-CV mean absolute error (target "
                           "units)", ["target"], registry=registry)
        self.g_mape = Gauge(f"{p}_model_cv_mape_ratio", "Grouped-CV mean absolute % error",
                            ["target"], registry=registry)
        self.g_cov = Gauge(f"{p}_model_interval_coverage_ratio", "Measured coverage of the "
                           "prediction interval on held-out groups", ["target"],
                           registry=registry)
        self.g_drift = Gauge(f"{p}_model_drift_mape_ratio", "MAPE of the current model on "
                             "complete records it was not trained on", ["target"],
                             registry=registry)
        self.g_last = Gauge(f"{p}_last_training_timestamp_seconds", "Last successful training",
                            registry=registry)
        self.c_train = Counter(f"{p}_trainings_total", "Training runs by outcome and trigger",
                               ["outcome", "trigger"], registry=registry)
        for state in ("complete", "waiting", "incomplete"):
            self.g_records.labels(state)
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
        self._dirty = True
        return []

    def train(self) -> list[ModelUpdate]:
        """Train every target on a snapshot of the complete records; raises NotEnoughData
        with reasons."""
        now = time.time_ns()
        metas, skipped = train_and_register(self.store, self.models, self.cfg.min_records, now)
        self.last_skipped = skipped
        for k, v in skipped.items():
            log.info("not trained %s: %s", k, v)
        for m in metas:
            if m["hardware"] == "global":
                self.g_mae.labels(m["target"]).set(m["cv"]["mae"])
                self.g_mape.labels(m["target"]).set(m["cv"]["mape"])
                cov = (m.get("interval") or {}).get("measured_coverage")
                if cov is not None:
                    self.g_cov.labels(m["target"]).set(cov)
        self.g_last.set(now / 1e9)
        complete = self.store.complete_records()
        self.last_trained_complete = len(complete)
        self._trained_ids = {r.scenario_id for r in complete}
        return [update_of(m) for m in metas]

    def drift(self) -> dict[str, float]:
        """MAPE of each current global model on complete records it has not seen."""
        new = [r for r in self.store.complete_records() if r.scenario_id not in self._trained_ids]
        out: dict[str, float] = {}
        if not self._trained_ids or len(new) < self.cfg.drift_min_records:
            return out
        for target, spec in TARGETS.items():
            meta = self.models.latest_meta(target)
            if meta is None:
                continue
            lm = self.models.load(meta["model_id"])
            errs = []
            for r in new:
                y = spec.value(r)
                if y is None or y == 0:
                    continue
                errs.append(abs(predict_one(lm.pipeline, r.settings, r.hardware) - y) / abs(y))
            if len(errs) >= self.cfg.drift_min_records:
                out[target] = sum(errs) / len(errs)
                self.g_drift.labels(target).set(out[target])
        return out

    def _drifted(self) -> str | None:
        if self.cfg.drift_factor <= 0:
            return None
        for target, mape in self.drift().items():
            meta = self.models.latest_meta(target)
            if meta and mape > self.cfg.drift_factor * max(meta["cv"]["mape"], 0.01):
                return f"{target}: MAPE {mape:.1%} on new records vs CV {meta['cv']['mape']:.1%}"
        return None

    def tick(self, now_ns: int) -> list[Output]:
        if not (self._dirty or self.train_requested):
            return []
        self._dirty = False
        self._refresh_status()
        st = self.store.status()
        trigger = None
        if self.train_requested:
            trigger = "requested"
        elif self.cfg.retrain_every > 0 and (
                st.complete - self.last_trained_complete >= self.cfg.retrain_every):
            trigger = "new_records"
        elif st.complete > self.last_trained_complete and self._trained_ids:
            why = self._drifted()
            if why:
                log.info("retraining: error drift (%s)", why)
                trigger = "drift"
        if trigger is None:
            return []
        self.train_requested = False
        try:
            updates = self.train()
        except NotEnoughData as e:
            self.last_error = str(e)
            log.warning("not training: %s", e)
            self.last_trained_complete = st.complete
            self.c_train.labels("not_enough_data", trigger).inc()
            return []
        self.last_error = None
        self.c_train.labels("ok", trigger).inc()
        return [Output(model_updates.TOPIC, f"{u.target}@{u.hardware}".encode(), u.to_bytes())
                for u in updates]

    def safe_offsets(self) -> dict[TopicPartition, int] | None:
        return None

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        pass
