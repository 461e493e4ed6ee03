"""Pieces of the shared run loop that need no broker."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from shared.kafka import BadInput, Output, WorkerMetrics, _count_dead_letters, dead_letter


def test_dead_letters_emitted_outside_handle_are_counted() -> None:
    reg = CollectorRegistry()
    m = WorkerMetrics("svc", reg)
    rec = ConsumerRecord(topic="scenario.events", partition=1, offset=7, timestamp=0,
                         timestamp_type=0, key=b"h", value=b"{}", checksum=None,
                         serialized_key_size=1, serialized_value_size=2, headers=())
    outs = [dead_letter(rec, "svc", BadInput("libvmaf failed", "ffmpeg")),
            Output("quality.results", b"k", b"{}"),
            Output("other.dlq", None, b"not a dead letter")]
    _count_dead_letters(outs, m)
    assert reg.get_sample_value("joulestream_svc_dead_letters_total",
                                {"topic": "scenario.events", "error_type": "ffmpeg"}) == 1.0
    assert reg.get_sample_value("joulestream_svc_dead_letters_total",
                                {"topic": "other", "error_type": "invalid"}) == 1.0
