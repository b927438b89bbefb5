"""The operator's Prometheus metrics. Names and labels are documented in docs/observability.md."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from onair.processmetrics import register_process_metrics

REGISTRY = CollectorRegistry(auto_describe=True)
register_process_metrics(REGISTRY)

RECONCILES = Counter("onair_operator_reconciles", "Reconciles run, by kind and result.", ["kind", "result"],
                     registry=REGISTRY)
RECONCILE_SECONDS = Histogram("onair_operator_reconcile_duration_seconds", "Time one reconcile took.", ["kind"],
                              registry=REGISTRY, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
API_WRITES = Counter("onair_operator_api_writes", "Writes to the API server, by verb and resource.",
                     ["verb", "resource"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("onair_operator_queue_depth", "Jobs waiting to be reconciled.", registry=REGISTRY)
WEBHOOKS = Counter("onair_operator_webhook_deliveries", "Webhook deliveries, by result.", ["result"],
                   registry=REGISTRY)
ENCODER_POLLS = Counter("onair_operator_encoder_polls", "Reads of encoders' /status, by result.", ["result"],
                        registry=REGISTRY)


class JobsByPhase(Collector):
    """`onair_jobs{kind,phase}` computed from the operator's cache at scrape time."""

    def __init__(self, counts: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        self.counts = counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("onair_jobs", "Jobs known to the operator, by kind and phase.",
                                   labels=["kind", "phase"])
        for kind, phase, count in self.counts():
            family.add_metric([kind, phase], count)
        yield family
