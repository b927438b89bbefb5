"""Each program's /metrics also reports its process: memory, CPU, open files and the Python
collector (what an alert on a leaking or stalling gateway, operator or encoder needs)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from onair.api_gateway.app import REGISTRY_KEY, init_app
from onair.api_gateway.config import GatewayConfig
from onair.encoder.status import Metrics
from onair.operator.metrics import REGISTRY as OPERATOR_REGISTRY


def samples(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


def test_every_program_reports_its_memory_cpu_and_collector() -> None:
    gateway = init_app(GatewayConfig(stream_key_seed="s" * 32, watch=False))[REGISTRY_KEY]
    for program, registry in (("gateway", gateway), ("encoder", Metrics().registry), ("operator", OPERATOR_REGISTRY)):
        found = samples(registry)
        assert found.get("process_resident_memory_bytes", 0) > 10 * 2**20, program
        assert "process_cpu_seconds_total" in found and "process_open_fds" in found, program
        assert "python_gc_collections_total" in found and "python_info" in found, program
        assert any(name.startswith("onair_") for name in found), program
