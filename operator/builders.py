"""Pure functions that return the objects a job owns. No API calls: testable without a cluster."""

from __future__ import annotations

import json
from typing import Any

from onair.models import (
    API_VERSION,
    HardwareAcceleration,
    InputClass,
    JobTemplateSpec,
    LiveJob,
    RecordingFormat,
    RecordJob,
    StorageType,
)
from onair.operator import naming
from onair.operator.config import OperatorConfig
from onair.streamkeys import derive_control_key, derive_preview_key, derive_stream_key
from onair.urls import same_origin

ENCODER_ROLE = "encoder"
RECORDER_ROLE = "recorder"
STREAM_KEY_FIELD = "streamKey"
CONTROL_KEY_FIELD = "controlKey"
LABEL_JOB = "onair.dev/job"
LABEL_KIND = "onair.dev/kind"
LABEL_ROLE = "onair.dev/role"
LABEL_ATTEMPT = "onair.dev/attempt"
LABEL_SPEC_GENERATION = "onair.dev/spec-generation"  # the job's metadata.generation its Pod was made from
LABEL_PROJECT = "onair.dev/project-id"
# An encoder made only to close the playlists a dead one left open (ENDLIST): it takes no input.
LABEL_FINISH_ONLY = "onair.dev/finish-only"
# How long an encoder's status server may not answer before the kubelet ends it as hung: 5 minutes,
# far past any slow moment of a loaded node (readiness, every 2 s, already takes it out of its Service).
LIVENESS_PERIOD_SECONDS = 10
LIVENESS_FAILURES = 30
MANAGED_BY = {"app.kubernetes.io/managed-by": "onair-operator", "app.kubernetes.io/part-of": "onair"}
MANAGED_BY_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())

Job = LiveJob | RecordJob


def owner_reference(job: Job) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": job.kind,
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def role_of(job: Job) -> str:
    return ENCODER_ROLE if isinstance(job, LiveJob) else RECORDER_ROLE


def child_labels(job: Job, role: str) -> dict[str, str]:
    labels = {
        **MANAGED_BY,
        "app.kubernetes.io/name": f"onair-{role}",
        LABEL_JOB: str(job.metadata.name),
        LABEL_KIND: job.kind,
        LABEL_ROLE: role,
    }
    project = job.metadata.labels.get(LABEL_PROJECT)
    if project:
        labels[LABEL_PROJECT] = project
    return labels


def _metadata(job: Job, name: str, role: str, **extra_labels: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": job.metadata.namespace,
        "labels": {**child_labels(job, role), **extra_labels},
        "ownerReferences": [owner_reference(job)],
    }


def build_job_secret(job: Job, seed: str) -> dict[str, Any]:
    """The job's keys, derived from the seed: a LiveJob's publish credential (the gateway derives the
    same key) and, for every job, the control key its encoder demands of the operator's commands."""
    meta = job.metadata
    identity = (seed, str(meta.namespace), str(meta.name), str(meta.uid))
    data = {CONTROL_KEY_FIELD: derive_control_key(*identity)}
    if isinstance(job, LiveJob):
        data[STREAM_KEY_FIELD] = derive_stream_key(*identity)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(job, naming.job_secret_name(job.kind, str(meta.name), str(meta.uid)), role_of(job)),
        "type": "Opaque",
        "stringData": data,
    }


def preview_key(job: LiveJob, seed: str) -> str:
    """The key of the job's live preview: in its encoder's environment and its status URL."""
    return derive_preview_key(seed, str(job.metadata.namespace), str(job.metadata.name), str(job.metadata.uid))


def build_ingest_service(job: LiveJob, config: OperatorConfig) -> dict[str, Any]:
    name = naming.service_name(str(job.metadata.name), str(job.metadata.uid))
    ports = [
        {"name": "rtmp", "port": config.rtmp_port, "targetPort": "rtmp", "protocol": "TCP"},
        {"name": "srt", "port": config.srt_port, "targetPort": "srt", "protocol": "UDP"},
        {"name": "preview", "port": config.preview_port, "targetPort": "preview", "protocol": "TCP"},
    ]
    spec: dict[str, Any] = {
        "type": config.service_type,
        "selector": {LABEL_JOB: str(job.metadata.name), LABEL_ROLE: ENCODER_ROLE},
        "ports": ports,
    }
    if config.service_type == "ClusterIP":
        # Headless: the name resolves to the one encoder Pod, which listens on the same ports. A
        # virtual IP would add nothing for a single Pod, and costs an address allocation (an
        # IPAddress object) and kube-proxy rules per job.
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(job, name, ENCODER_ROLE), "spec": spec}


def storage_prefix(job: Job) -> str:
    path = job.spec.destination.path if isinstance(job, LiveJob) else job.spec.output.path
    return (path or str(job.metadata.name)).strip("/")


def build_encoder_config(
    job: Job, template: JobTemplateSpec | None, config: OperatorConfig, attempt: int,
    clip: dict[str, Any] | None = None, finish_only: bool = False,
) -> dict[str, Any]:
    """What the encoder needs to know, passed as ONAIR_JOB_CONFIG (no secrets in it). `finish_only`: a
    LiveJob's encoder that reads the stored playlists, closes them and exits, taking no input."""
    location = job.spec.destination if isinstance(job, LiveJob) else job.spec.output
    if isinstance(job, LiveJob) and job.spec.input.input_class == InputClass.SINGLE:
        template = None  # the encoder passes the source through (remux, one rendition)
    return {
        "kind": job.kind,
        "namespace": job.metadata.namespace,
        "name": job.metadata.name,
        "attempt": attempt,
        "spec": job.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "template": None if template is None else template.model_dump(mode="json", by_alias=True, exclude_none=True),
        "storage": {
            "endpoint": location.endpoint or config.s3_endpoint,
            "bucket": location.bucket,
            "prefix": storage_prefix(job),
            "region": location.region or config.s3_region,
            # Alibaba OSS refuses path-style requests.
            "addressingStyle": "virtual" if isinstance(job, RecordJob) and job.spec.output.type == StorageType.OSS
                               else "path",
            # Only an endpoint of the job's own is limited: the installation's may be inside the cluster.
            **({"namedByJob": True} if location.endpoint and not same_origin(location.endpoint, config.s3_endpoint)
               else {}),
        },
        "clip": clip,
        # Only for a closer, so every other encoder's configuration stays as it was (an encoder image older
        # than the operator ignores the key: the operator tells the closer POST /finish as well).
        **({"finishOnly": True} if finish_only else {}),
        **({"pullAllowedNetworks": [str(network) for network in config.pull_allowed_networks]}
           if config.pull_allowed_networks else {}),
        **({"storageAllowedNetworks": [str(network) for network in config.storage_allowed_networks]}
           if config.storage_allowed_networks else {}),
        # A new recorder Pod continues the pauses of the earlier ones (a clip leaves them out).
        "pausedRanges": [paused.model_dump(mode="json") for paused in job.status.paused_ranges]
        if isinstance(job, RecordJob) and job.status else [],
        # A new recorder Pod's progress goes on from the first one's start (a range with no start).
        "startedAt": job.status.started_at.isoformat()
        if isinstance(job, RecordJob) and job.status and job.status.started_at else None,
    }


def restricted(context: dict[str, Any]) -> dict[str, Any]:
    """A securityContext the platform gives (the chart's), held to the restricted Pod Security Standard
    whatever it says: non-root, not privileged, a seccomp profile of RuntimeDefault or Localhost."""
    held = {key: value for key, value in context.items() if key != "privileged"}
    if held.get("runAsUser") == 0:  # root
        del held["runAsUser"]
    held["runAsNonRoot"] = True
    if "seccompProfile" in held and (held["seccompProfile"] or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        held["seccompProfile"] = {"type": "RuntimeDefault"}
    return held


def wants_gpu(job: Job, template: JobTemplateSpec | None) -> bool:
    """A LiveJob that transcodes with a template asking for NVENC (recorders and passthrough copy)."""
    return (isinstance(job, LiveJob) and job.spec.input.input_class != InputClass.SINGLE
            and template is not None and template.hardware_acceleration == HardwareAcceleration.NVENC)


def _encoder_resources(gpu: bool, config: OperatorConfig) -> dict[str, Any]:
    """The configured resources, plus one GPU for NVENC (the Pod then waits for a node that has one,
    and the job's Scheduled condition says so)."""
    if not gpu:
        return config.encoder_resources
    limits = {**config.encoder_resources.get("limits", {}), config.gpu_resource_name: 1}
    return {**config.encoder_resources, "limits": limits}


def termination_grace_seconds(job: Job, config: OperatorConfig) -> int:
    """The grace period of the job's Pod, which its encoder is told: a stop's work must fit in it. A
    recorder that joins its segments into MP4s at its end gets the longer one."""
    if isinstance(job, RecordJob) and job.spec.output.format == RecordingFormat.MP4:
        return max(config.encoder_termination_grace_seconds, config.mp4_recorder_termination_grace_seconds)
    return config.encoder_termination_grace_seconds


def build_encoder_pod(
    job: Job, template: JobTemplateSpec | None, config: OperatorConfig, attempt: int,
    clip: dict[str, Any] | None = None, finish_only: bool = False,
) -> dict[str, Any]:
    """The encoder (LiveJob) or recorder (RecordJob) Pod of one attempt.

    restartPolicy Never: the operator, not the kubelet, replaces a dead encoder, so every attempt
    is a new Pod with its own name, restarts are counted in the job's status, and a configuration
    that can never work (exit code 2) ends the job Failed instead of crash-looping.
    """
    role = role_of(job)
    name = naming.pod_name(str(job.metadata.name), role, str(job.metadata.uid), attempt)
    location = job.spec.destination if isinstance(job, LiveJob) else job.spec.output
    credentials = location.credentials_secret or config.s3_credentials_secret
    grace = termination_grace_seconds(job, config)
    env: list[dict[str, Any]] = [
        {"name": "ONAIR_JOB_CONFIG", "value": json.dumps(build_encoder_config(job, template, config, attempt, clip,
                                                                               finish_only),
                                                          separators=(",", ":"))},
        {"name": "ONAIR_LISTEN_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "ONAIR_LOG_FORMAT", "value": config.log_format},
        {"name": "ONAIR_TERMINATION_GRACE_SECONDS", "value": str(grace)},
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": credentials, "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "AWS_SECRET_ACCESS_KEY",
         "valueFrom": {"secretKeyRef": {"name": credentials, "key": "AWS_SECRET_ACCESS_KEY"}}},
        # Temporary credentials (STS) come with a token; boto3 reads it from the environment.
        {"name": "AWS_SESSION_TOKEN",
         "valueFrom": {"secretKeyRef": {"name": credentials, "key": "AWS_SESSION_TOKEN", "optional": True}}},
    ]
    gpu = wants_gpu(job, template)
    if gpu:
        # The NVIDIA container runtime exposes NVENC only with the "video" driver capability.
        env.append({"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,video,utility"})
    # Optional: the Secrets of jobs made before control keys existed lack it (their encoders then
    # refuse every command, and the operator stops them with a plain SIGTERM).
    env.append({"name": "ONAIR_CONTROL_KEY", "valueFrom": {"secretKeyRef": {
        "name": naming.job_secret_name(job.kind, str(job.metadata.name), str(job.metadata.uid)),
        "key": CONTROL_KEY_FIELD,
        "optional": True}}})
    ports = [{"name": "status", "containerPort": config.status_port, "protocol": "TCP"}]
    if isinstance(job, LiveJob):
        env.append({"name": "ONAIR_STREAM_KEY", "valueFrom": {"secretKeyRef": {
            "name": naming.stream_key_secret_name(str(job.metadata.name), str(job.metadata.uid)),
            "key": STREAM_KEY_FIELD}}})
        passphrase = job.spec.input.srt_passphrase_secret_ref
        if passphrase is not None:
            env.append({"name": "ONAIR_SRT_PASSPHRASE",
                        "valueFrom": {"secretKeyRef": {"name": passphrase.name, "key": passphrase.key}}})
        # As public as the job's status, which names it in the preview URL: no Secret needed.
        env.append({"name": "ONAIR_PREVIEW_KEY", "value": preview_key(job, config.stream_key_seed)})
        ports += [
            {"name": "rtmp", "containerPort": config.rtmp_port, "protocol": "TCP"},
            {"name": "srt", "containerPort": config.srt_port, "protocol": "UDP"},
            {"name": "preview", "containerPort": config.preview_port, "protocol": "TCP"},
        ]
    env += [dict(entry) for entry in config.encoder_env]
    container = {
        "name": role,
        "image": config.encoder_image,
        "imagePullPolicy": config.encoder_image_pull_policy,
        "command": list(config.encoder_command),
        "args": [f"--rtmp-port={config.rtmp_port}", f"--srt-port={config.srt_port}",
                 f"--status-port={config.status_port}", f"--preview-port={config.preview_port}"],
        "env": env,
        "ports": ports,
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "status"}, "periodSeconds": 2,
                           "timeoutSeconds": 1},
        # An encoder whose event loop has not answered for minutes has hung: the kubelet ends it, and the
        # operator counts that death and starts the next attempt. Its grace period is no use to it then.
        "livenessProbe": {"httpGet": {"path": "/livez", "port": "status"}, "periodSeconds": LIVENESS_PERIOD_SECONDS,
                          "timeoutSeconds": 5, "failureThreshold": LIVENESS_FAILURES,
                          "terminationGracePeriodSeconds": 10},
        "resources": _encoder_resources(gpu, config),
        "securityContext": {
            **restricted(config.encoder_container_security_context),
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "work", "mountPath": "/tmp"}],
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # The encoder talks to the ingest, the bucket and its own status port, never to the API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"},
                            **restricted(config.encoder_pod_security_context)},
        "containers": [container],
        "volumes": [{"name": "work", "emptyDir": {"sizeLimit": config.encoder_work_dir_size}}],
    }
    if config.encoder_service_account:
        spec["serviceAccountName"] = config.encoder_service_account
    if config.encoder_node_selector:
        spec["nodeSelector"] = dict(config.encoder_node_selector)
    if config.encoder_tolerations:
        spec["tolerations"] = list(config.encoder_tolerations)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(job, name, role, **{LABEL_ATTEMPT: str(attempt),
                                                   LABEL_SPEC_GENERATION: str(job.metadata.generation or 0)},
                              **({LABEL_FINISH_ONLY: "true"} if finish_only else {})),
        "spec": spec,
    }
