"""The operator's settings: one model, read from ONAIR_* environment variables (the Helm chart and the
local platform set them)."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator

from onair.streamkeys import MIN_SEED_LENGTH

ENV_PREFIX = "ONAIR_"
# The encoder Pod's environment that each job's own settings and Secrets make.
ENCODER_ENV_SET_BY_OPERATOR = frozenset({
    "ONAIR_JOB_CONFIG", "ONAIR_LISTEN_HOST", "ONAIR_LOG_FORMAT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "NVIDIA_DRIVER_CAPABILITIES", "ONAIR_CONTROL_KEY", "ONAIR_STREAM_KEY", "ONAIR_PREVIEW_KEY",
    "ONAIR_SRT_PASSPHRASE", "ONAIR_TERMINATION_GRACE_SECONDS",
})


class OperatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field("onair-system", description="The operator's own namespace (fallback JobTemplates).")
    watch_namespaces: list[str] = Field(default_factory=list, description="Empty: all namespaces.")
    peering_name: str = Field("onair", description="kopf peering object; replicas with the same name take turns.")
    standalone: bool = Field(False, description="No peering (a single replica, or the tests).")
    peering_priority: int = Field(
        default_factory=lambda: secrets.randbelow(2**31),
        description="kopf peering: the replica with the highest priority acts; equal ones all pause, so random.",
    )
    peering_lifetime_seconds: int = Field(
        60, ge=5, description="kopf peering: how long a replica's heartbeat counts; a dead leader's "
                              "standby takes over within about this long.")
    workers: int = Field(64, ge=1, le=512, description="Reconciles running at once (each mostly waits on the API).")
    api_connections: int = Field(
        64, ge=1, le=512,
        description="Connections to the API server at most. Each TLS connection holds about 150 KB; the API "
                    "server, not the number of connections, bounds the write rate.",
    )

    encoder_image: str = "ghcr.io/onair-dev/onair:0.1.0"
    encoder_command: list[str] = Field(default_factory=lambda: ["onair-encoder"])
    encoder_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    encoder_pod_security_context: dict[str, Any] = Field(
        default_factory=lambda: {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                                 "seccompProfile": {"type": "RuntimeDefault"}},
        description="The encoder Pods' securityContext (the chart's podSecurityContext: without runAsUser where "
                    "the platform assigns ids, as OpenShift's restricted-v2 does). runAsNonRoot and a "
                    "RuntimeDefault seccomp profile are kept whatever it says.",
    )
    encoder_container_security_context: dict[str, Any] = Field(
        default_factory=dict,
        description="The encoder container's securityContext (the chart's containerSecurityContext). No "
                    "privilege escalation, a read-only root filesystem and no capabilities are kept whatever "
                    "it says.",
    )
    encoder_service_account: str = ""
    encoder_resources: dict[str, Any] = Field(
        default_factory=lambda: {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}
    )
    gpu_resource_name: str = Field(
        "nvidia.com/gpu", min_length=1,
        description="Extended resource an encoder Pod requests (one) when its JobTemplate asks for NVENC.",
    )
    encoder_node_selector: dict[str, str] = Field(default_factory=dict)
    encoder_tolerations: list[dict[str, Any]] = Field(default_factory=list)
    encoder_termination_grace_seconds: int = Field(
        30, ge=10, le=3600,
        description="Grace period of an encoder or recorder Pod: a stop uploads the last segments and playlists "
                    "in it (the encoder is told it and leaves itself 5 s to exit).",
    )
    mp4_recorder_termination_grace_seconds: int = Field(
        600, ge=10, le=86400,
        description="Grace period of the Pod of a RecordJob with output format mp4 (the longer of this and the "
                    "encoder's): at its end the recorder joins every segment into one MP4 per rendition and "
                    "uploads them, minutes for a recording of hours. It exits as soon as that is done.",
    )
    encoder_work_dir_size: str = Field(
        "4Gi", pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$",
        description="Size limit of an encoder Pod's scratch volume (emptyDir): the spool, and an MP4 "
                    "recording's segments until it is joined (a long MP4 recording needs more).",
    )
    encoder_env: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extra environment of the encoder Pods (name/value or name/valueFrom), e.g. "
                    "ONAIR_SPOOL_MAX_BYTES or ONAIR_LOG_LEVEL; not the variables the operator sets itself.",
    )
    rtmp_port: int = 1935
    srt_port: int = 9000
    status_port: int = 8090
    preview_port: int = Field(8091, description="Port of a LiveJob encoder's live preview over WebSocket.")
    preview_base_url: str = Field(
        "", pattern=r"^(wss?://[^/?#\s]+(/[^?#\s]*)?)?$",
        description="Base of the live preview's URL when the gateway relays it (wss://<the gateway's public "
                    "host>): a console served over https may open only wss://. Empty: each encoder's own ws:// "
                    "address.",
    )

    ingest_host: str = Field("", description="Public host in ingest URLs; empty: the Service's cluster DNS name.")
    ingest_address: Literal["service", "pod-ip"] = Field(
        "service", description="pod-ip: ingest URLs name the encoder Pod's IP (the dev platform has no Service proxy)."
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"

    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_credentials_secret: str = Field(
        "onair-s3-credentials", description="Secret (in the job's namespace) used when a job names none."
    )
    s3_public_base_url: str = Field("", description="Base URL of the bucket for playback; empty: the endpoint.")
    cdn_base_url: str = ""

    poll_interval_seconds: float = Field(
        1.0, gt=0,
        description="The shortest time between two reads of an encoder's /status whose answer did not change, "
                    "and the period for an encoder that does not hold reads (each read is held until the "
                    "encoder's state changes or the status progress interval has passed).",
    )
    status_progress_interval_seconds: float = Field(
        10.0, ge=0, le=300,
        description="A job's status is written at most this often when only its progress moved (segments "
                    "written, upload latency, input statistics, recorded seconds); a phase, a condition or "
                    "anything else is written at once. 0: every change at once.",
    )
    resync_seconds: float = Field(
        300.0, gt=0,
        description="How often the Pods and jobs are listed to drop from the caches what was deleted while a "
                    "watch was away (a watch that reconnects lists again, but reports no such deletion).",
    )
    pod_event_batch_seconds: float = Field(
        0.3, ge=0, le=5,
        description="A Pod event reconciles its job after this delay, so that the quick succession of a new "
                    "Pod's events (bound, started, ready) costs one status write instead of one each.",
    )
    provisioning_status_delay_seconds: float = Field(
        5.0, ge=0, le=60,
        description="A job whose new encoder Pod is not ready yet is written Provisioning after this delay: a "
                    "Pod ready sooner costs one status write (WaitingForInput, the timings still listing "
                    "Provisioning) instead of two. 0: at once.",
    )
    max_restarts: int = Field(5, ge=0, description="Encoder crashes in a row before the job is Failed.")
    healthy_run_seconds: float = Field(
        600.0, gt=0,
        description="An encoder that ran this long before it died was healthy: its death starts a new streak "
                    "(the back-off and max_restarts count deaths in a row, not a 24/7 channel's evictions).",
    )
    provisioning_timeout_seconds: float = Field(
        300.0, gt=0,
        description="An encoder Pod stuck this long after its creation on an error that may still clear "
                    "(image pull failing, a missing Secret, no node for it) fails the job; InvalidImageName "
                    "fails it at once.",
    )
    restart_backoff_seconds: float = Field(2.0, gt=0)
    restart_backoff_max_seconds: float = Field(60.0, gt=0)
    webhook_secret: str = Field("", description="HMAC key for webhook signatures (from a Secret).")
    stream_key_seed: str = Field(
        min_length=MIN_SEED_LENGTH, repr=False,
        description="Seed the stream keys are derived from (from a Secret; the gateway must have the same).",
    )
    webhook_attempts: int = Field(12, ge=1)  # with the back-off (1 s doubling to 5 min), some 20 minutes
    webhook_timeout_seconds: float = Field(5.0, gt=0)
    webhook_allow_private_addresses: bool = Field(
        False, description="Let callbackUrl/notifyUrl reach loopback, private and link-local addresses (the "
                           "cluster's own services, cloud metadata): only where every job author is trusted.",
    )
    pull_allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Networks besides the public Internet that a LiveJob's input.url and a RecordJob's streamUrl "
                    "may be pulled from (CIDRs, e.g. an origin's 10.20.0.0/16). Other loopback, private and "
                    "link-local addresses (the cluster's own services, cloud metadata) are refused.",
    )
    storage_allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Networks besides the public Internet that an S3 endpoint a job names (destination.endpoint, "
                    "output.endpoint) may be at (CIDRs). The installation's own endpoint (s3_endpoint) is always "
                    "allowed; other loopback, private and link-local addresses (the cluster's own services, cloud "
                    "metadata) are refused.",
    )
    listen_host: str = Field("0.0.0.0", description="Address of the health and metrics endpoints.")
    log_format: str = Field("text", pattern="^(text|json)$", description="Passed on to the encoders.")
    health_port: int = 8080
    metrics_port: int = 9090

    @field_validator("encoder_env")
    @classmethod
    def _encoder_env_names(cls, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"each entry needs a name: {entry}")
            if name in ENCODER_ENV_SET_BY_OPERATOR:
                raise ValueError(f"{name} is set by the operator for each job")
        return entries

    @field_validator("pull_allowed_networks", "storage_allowed_networks", mode="before")
    @classmethod
    def _networks_of_addresses(cls, networks: Any) -> Any:
        """10.20.0.5/16 means 10.20.0.0/16, as ip route takes it (a strict reading would stop the operator)."""
        if not isinstance(networks, list):
            return networks
        return [ipaddress.ip_network(network, strict=False) if isinstance(network, str) else network
                for network in networks]

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorConfig:
        """ONAIR_<FIELD> (upper case); lists and dicts as JSON, booleans as true/false."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            annotation = str(field.annotation)
            if annotation.startswith(("list", "dict")):
                values[name] = json.loads(raw) if raw.strip().startswith(("[", "{")) else raw.split(",")
            else:
                values[name] = raw
        return cls.model_validate(values)
