"""Where a job's ingest Service is reached from outside the cluster (pure): its node ports, and the
address its load balancer was given (by the cloud's controller, in the Service's status)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServiceEndpoint:
    node_ports: dict[str, int] = field(default_factory=dict)  # port name (rtmp, srt) -> node port
    load_balancer: str | None = None  # the first ingress IP or host name; None until one is given


def service_endpoint(service: dict[str, Any]) -> ServiceEndpoint:
    ports = (service.get("spec") or {}).get("ports") or []
    ingress = (((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")) or []
    # A load balancer may be given an IP, a host name (AWS' ELBs) or both; the IP needs no lookup.
    address = next((i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")), None)
    return ServiceEndpoint(node_ports={p["name"]: p["nodePort"] for p in ports if p.get("name") and p.get("nodePort")},
                           load_balancer=address)
