"""The Helm chart: lint, render (default and non-default values), and a real install, upgrade and
uninstall against the local platform.

The platform's process node runs the chart's Pods as local processes, without a ServiceAccount token
or volumes. The chart's dev-only values make them work there anyway: `dev.operatorKubeconfig` and
`dev.gatewayKubeconfig` point at kubeconfigs holding a token of the chart's own ServiceAccounts (so
the chart's RBAC is what is exercised), and `dev.listenOnPodIP` keeps the two programs from fighting
over one port on the shared loopback."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.conftest import CHART, helm_bin
from localplatform.platform import LocalPlatform, PlatformInfo
from waiting import wait_until

from onair.operator.config import OperatorConfig
from onair.streamkeys import derive_stream_key

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
Objects = list[dict[str, Any]]


def helm(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm_bin(), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result


def render(*args: str, namespace: str = "onair-system") -> Objects:
    out = helm("template", "onair", str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in matches]}"
    return matches[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# -- lint and render ---------------------------------------------------------------------------------


def test_helm_lint_strict() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


def test_render_defaults() -> None:
    objects = render()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("Deployment") == 2 and kinds.count("JobTemplate") == 3
    assert "CustomResourceDefinition" not in kinds, "CRDs come from crds/, installed before the templates"
    assert "NetworkPolicy" not in kinds, "only where a network plugin enforces them: networkPolicy.enabled"

    operator = find(objects, "Deployment", "onair-operator")
    assert operator["spec"]["replicas"] == 1
    env = env_of(operator)
    assert env["ONAIR_STANDALONE"] == "false" and env["ONAIR_PEERING_NAME"] == "onair"
    assert env["ONAIR_WATCH_NAMESPACES"] == "[]"
    assert env["ONAIR_PULL_ALLOWED_NETWORKS"] == "[]", "pulls reach public addresses only"
    assert env["ONAIR_STORAGE_ALLOWED_NETWORKS"] == "[]", "a store a job names is at a public address only"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}, "kopf's peer identity is the Pod"
    assert json.loads(env["ONAIR_ENCODER_COMMAND"]) == ["onair-encoder"]
    # The encoder Pods the operator makes take the chart's security and pull settings, as its own Pods do.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    plain = {key: value for key, value in env.items() if isinstance(value, str)}  # not the Secrets' references
    encoder_config = OperatorConfig.from_env({**plain, "ONAIR_STREAM_KEY_SEED": "seed-of-this-test-" * 2})
    assert encoder_config.encoder_pod_security_context == values["podSecurityContext"]
    assert encoder_config.encoder_container_security_context == values["containerSecurityContext"]
    assert encoder_config.encoder_image_pull_policy == values["image"]["pullPolicy"]
    assert env["ONAIR_ENCODER_IMAGE"] == "ghcr.io/onair-dev/onair:0.1.0"
    # An MP4 recorder's Pod gets minutes to join and upload its MP4s at its end; the others half a minute.
    grace = (env["ONAIR_ENCODER_TERMINATION_GRACE_SECONDS"], env["ONAIR_MP4_RECORDER_TERMINATION_GRACE_SECONDS"])
    assert grace == ("30", "600")
    assert env["ONAIR_WEBHOOK_SECRET"]["secretKeyRef"]["name"] == "onair-webhooks"
    assert "KUBECONFIG" not in env
    find(objects, "ClusterKopfPeering", "onair")
    # Of the peering objects, only its own is written: other kopf operators' stay theirs.
    peering_writes = [r for r in find(objects, "ClusterRole", "onair-operator-framework")["rules"]
                      if "kopf.dev" in r["apiGroups"] and "patch" in r["verbs"]]
    assert [r.get("resourceNames") for r in peering_writes] == [["onair"]]

    gateway = find(objects, "Deployment", "onair-gateway")
    genv = env_of(gateway)
    assert genv["ONAIR_GATEWAY_JWT_SECRET"]["secretKeyRef"]["name"] == "onair-gateway"
    assert "ONAIR_GATEWAY_API_KEYS" not in genv and "ONAIR_GATEWAY_API_KEYS_SECRET" not in genv
    assert not [o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "onair-gateway-api-keys"]
    # The signing key is given at startup and watched through the API, by name.
    assert genv["ONAIR_GATEWAY_JWT_SECRET_SECRET"] == "onair-gateway"
    assert genv["ONAIR_GATEWAY_JWT_SECRET_SECRET_KEY"] == "jwt-secret"
    assert find(objects, "Role", "onair-gateway-signing-key")["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["onair-gateway"],
         "verbs": ["get", "list", "watch"]}]
    assert find(objects, "RoleBinding", "onair-gateway-signing-key")["subjects"][0]["name"] == "onair-gateway"
    # Operator and gateway derive stream keys from one seed, and the gateway reads no Secret but its own.
    seed = {"name": "onair-stream-keys", "key": "stream-key-seed"}
    assert env["ONAIR_STREAM_KEY_SEED"]["secretKeyRef"] == genv["ONAIR_GATEWAY_STREAM_KEY_SEED"]["secretKeyRef"] == seed
    assert len(base64.b64decode(find(objects, "Secret", "onair-stream-keys")["data"]["stream-key-seed"])) >= 32
    # The keys the jobs' keys derive from outlive an uninstall (the jobs do); the gateway's own does not.
    for name, kept in (("onair-stream-keys", True), ("onair-webhooks", True), ("onair-gateway", False)):
        annotations = find(objects, "Secret", name)["metadata"].get("annotations") or {}
        assert (annotations.get("helm.sh/resource-policy") == "keep") == kept, name
    gateway_role = find(objects, "ClusterRole", "onair-gateway")
    assert not any("secrets" in r["resources"] for r in gateway_role["rules"])
    for deployment in (operator, gateway):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = pod["containers"][0]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert container["livenessProbe"] and container["readinessProbe"]
        assert pod["serviceAccountName"] in ("onair-operator", "onair-gateway")
    assert find(objects, "Service", "onair-gateway")["spec"]["ports"][0]["port"] == 80
    pdbs = {o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert pdbs == {"onair-gateway"}, "no PDB for a single operator replica"
    pdbs = {o["metadata"]["name"] for o in render("--set", "operator.replicas=3") if o["kind"] == "PodDisruptionBudget"}
    assert pdbs == {"onair-operator", "onair-gateway"}

    # RBAC: the framework's rules apart from the application's.
    framework = find(objects, "ClusterRole", "onair-operator-framework")
    assert {g for r in framework["rules"] for g in r["apiGroups"]} == {"apiextensions.k8s.io", "", "kopf.dev"}
    assert not any("events" in r["resources"] for r in framework["rules"]), "Events go where the jobs are"
    app = find(objects, "ClusterRole", "onair-operator")
    assert {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]} in app["rules"]
    assert not any("kopf.dev" in r["apiGroups"] for r in app["rules"])
    pod_rule = next(r for r in app["rules"] if r["resources"] == ["pods"])
    assert set(pod_rule["verbs"]) == {"get", "list", "watch", "create", "delete"}
    # Least privilege: the keys' Secrets and the ingest Services are created, never read or changed;
    # of the jobs only the status is written.
    assert {verb for r in app["rules"] if {"secrets", "services"} & set(r["resources"]) for verb in r["verbs"]} \
        == {"create"}
    assert {resource for r in app["rules"] if {"patch", "update"} & set(r["verbs"]) for resource in r["resources"]} \
        == {"livejobs/status", "recordjobs/status", "livejobs/finalizers", "recordjobs/finalizers"}
    # Owner-reference permission enforcement (OpenShift): blockOwnerDeletion on a child needs update on
    # its owner's finalizers.
    assert {"update"} == {verb for r in app["rules"] if "livejobs/finalizers" in r["resources"] for verb in r["verbs"]}
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for o in objects
               if o["kind"] == "ClusterRole" for r in o["rules"])
    bindings = {o["metadata"]["name"] for o in objects if o["kind"] == "ClusterRoleBinding"}
    assert bindings == {"onair-operator", "onair-operator-framework", "onair-gateway", "onair-gateway-pods",
                        "onair-gateway-jobs"}
    assert "ONAIR_GATEWAY_WATCH_NAMESPACES" not in genv, "all namespaces watched: the gateway reads Pods in all"

    templates = {o["spec"]["id"]: o for o in objects if o["kind"] == "JobTemplate"}
    assert set(templates) == {1, 2, 3}
    assert all(t["metadata"]["namespace"] == "onair-system" for t in templates.values())

    hook = find(objects, "Pod")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert not any(o["kind"] in ("Ingress", "ServiceMonitor", "PodMonitor") for o in objects)
    # Enabled with its default paths, the Ingress publishes the API and the preview relay, not /metrics.
    ingress = find(render("--set", "gateway.ingress.enabled=true"), "Ingress")
    assert [p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]] == ["/api", "/websocketplay"]
    # The one ConfigMap: the gateway's id counters, which the gateway may get and patch, and nothing else.
    assert find(objects, "ConfigMap")["metadata"]["name"] == "onair-gateway-ids"
    ids_role = find(objects, "Role", "onair-gateway-ids")
    assert ids_role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                  "resourceNames": ["onair-gateway-ids"], "verbs": ["get", "patch"]}]
    assert env_of(find(objects, "Deployment", "onair-gateway"))["ONAIR_GATEWAY_ID_COUNTER_CONFIGMAP"] == \
        "onair-gateway-ids"


def test_render_non_default_values(tmp_path: Path) -> None:
    values = {
        "fullnameOverride": "live",
        "image": {"registry": "registry.example.com", "repository": "media/onair",
                  "digest": "sha256:" + "a" * 64},
        "imagePullSecrets": ["regcred"],
        "operator": {"replicas": 1, "standalone": True, "watchNamespaces": ["news", "sport"], "workers": 4,
                     "extraEnv": [{"name": "ONAIR_MAX_RESTARTS", "value": "9"}]},
        "encoder": {"nodeSelector": {"pool": "encoders"},
                    "tolerations": [{"key": "encoders", "operator": "Exists", "effect": "NoSchedule"}],
                    "pullAllowedNetworks": ["10.20.0.0/16", "fd00::/8"], "storageAllowedNetworks": ["10.30.0.0/16"]},
        "ingest": {"host": "ingest.example.com", "serviceType": "LoadBalancer", "previewPort": 8191,
                   "previewBaseUrl": "wss://api.example.com"},
        "s3": {"endpoint": "https://s3.example.com", "region": "eu-west-1"},
        "webhooks": {"existingSecret": "my-webhook-key"},
        "streamKeys": {"existingSecret": "my-stream-keys", "secretKey": "seed"},
        "gateway": {"replicas": 1, "corsOrigins": ["https://console.example.com"], "previewMaxViewers": 250,
                    "apiKeys": {"keys": [{"name": "ci", "keySha256": "b" * 64, "projects": ["*"], "role": "write"}]},
                    "ingress": {"enabled": True, "className": "nginx",
                                "hosts": [{"host": "api.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                                "tls": [{"hosts": ["api.example.com"], "secretName": "api-tls"}]}},
        "jobTemplates": {"create": False},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                    "podMonitor": {"enabled": True},
                    "grafanaDashboard": {"enabled": True, "namespace": "monitoring"}},
        "tests": {"enabled": False},
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    objects = render("-f", str(path), namespace="media")

    operator = find(objects, "Deployment", "live-operator")
    assert operator["spec"]["replicas"] == 1
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/media/onair@sha256:" + "a" * 64
    assert operator["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    env = env_of(operator)
    assert env["ONAIR_STANDALONE"] == "true"
    assert json.loads(env["ONAIR_WATCH_NAMESPACES"]) == ["news", "sport", "media"]
    assert json.loads(env["ONAIR_ENCODER_NODE_SELECTOR"]) == {"pool": "encoders"}
    assert json.loads(env["ONAIR_ENCODER_TOLERATIONS"])[0]["key"] == "encoders"
    assert json.loads(env["ONAIR_PULL_ALLOWED_NETWORKS"]) == ["10.20.0.0/16", "fd00::/8"]
    assert json.loads(env["ONAIR_STORAGE_ALLOWED_NETWORKS"]) == ["10.30.0.0/16"]
    assert env["ONAIR_INGEST_HOST"] == "ingest.example.com" and env["ONAIR_SERVICE_TYPE"] == "LoadBalancer"
    # Previews relayed by the gateway, on the Ingress's host: it connects to the port encoders serve them on.
    assert env["ONAIR_PREVIEW_BASE_URL"] == "wss://api.example.com" and env["ONAIR_PREVIEW_PORT"] == "8191"
    # The load balancers' addresses go into the ingest URLs: the operator may list and watch Services.
    app = find(objects, "ClusterRole", "live-operator")
    assert {verb for r in app["rules"] if "services" in r["resources"] for verb in r["verbs"]} \
        == {"create", "list", "watch"}
    assert env["ONAIR_S3_ENDPOINT"] == "https://s3.example.com" and env["ONAIR_MAX_RESTARTS"] == "9"
    assert env["ONAIR_WEBHOOK_SECRET"]["secretKeyRef"]["name"] == "my-webhook-key"
    assert env["ONAIR_STREAM_KEY_SEED"]["secretKeyRef"] == {"name": "my-stream-keys", "key": "seed"}
    assert not [o for o in objects if o["kind"] in ("ClusterKopfPeering", "KopfPeering")], "standalone: no peering"
    assert not [o for o in objects if o["kind"] in ("JobTemplate", "PodDisruptionBudget", "Pod")]
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"} == {"live-gateway"}

    gateway = find(objects, "Deployment", "live-gateway")
    genv = env_of(gateway)
    assert genv["ONAIR_GATEWAY_CORS_ORIGINS"] == "https://console.example.com"
    assert genv["ONAIR_GATEWAY_PREVIEW_PORT"] == "8191" and genv["ONAIR_GATEWAY_PREVIEW_MAX_VIEWERS"] == "250"
    assert genv["ONAIR_GATEWAY_STREAM_KEY_SEED"]["secretKeyRef"] == {"name": "my-stream-keys", "key": "seed"}
    # The API keys are read from their Secret through the API, by name: no hash of them in the Pod template.
    assert genv["ONAIR_GATEWAY_API_KEYS_SECRET"] == "live-gateway"
    assert genv["ONAIR_GATEWAY_API_KEYS_SECRET_KEY"] == "api-keys.yaml"
    assert "ONAIR_GATEWAY_API_KEYS" not in genv
    assert "annotations" not in gateway["spec"]["template"]["metadata"]
    assert find(objects, "Role", "live-gateway-api-keys")["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["live-gateway"],
         "verbs": ["get", "list", "watch"]}]
    assert find(objects, "Role", "live-gateway-signing-key")["rules"][0]["resourceNames"] == ["live-gateway"]
    binding = find(objects, "RoleBinding", "live-gateway-api-keys")
    assert binding["subjects"][0]["name"] == "live-gateway" and binding["metadata"]["namespace"] == "media"
    secret = find(objects, "Secret", "live-gateway")
    keys = json.loads(base64.b64decode(secret["data"]["api-keys.yaml"]))
    assert keys == [{"name": "ci", "keySha256": "b" * 64, "projects": ["*"], "role": "write"}]

    ingress = find(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "live-gateway"
    monitor = find(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics", "http"}
    assert find(objects, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "status"
    dashboard = find(objects, "ConfigMap", "live-dashboard")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["onair.json"])["uid"] == "onair-overview"


def test_render_network_policies_admit_the_ports_the_pods_serve_from_whom_the_values_say() -> None:
    ingress_nginx = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    values = {"networkPolicy": {"enabled": True, "gatewayFrom": [ingress_nginx], "metricsFrom": [prometheus]}}
    objects = render("--set-json", f"networkPolicy={json.dumps(values['networkPolicy'])}")
    helm_test = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "onair",
                                                 "app.kubernetes.io/instance": "onair",
                                                 "app.kubernetes.io/component": "test"}}}
    for component, admitted in (("operator", {"health": None, "metrics": [prometheus]}),
                                ("gateway", {"http": [ingress_nginx, helm_test]})):
        policy = find(objects, "NetworkPolicy", f"onair-{component}")
        pod = find(objects, "Deployment", f"onair-{component}")["spec"]["template"]
        # It selects the component's Pods, and names ports their container serves.
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        served = {port["name"] for port in pod["spec"]["containers"][0]["ports"]}
        assert policy["spec"]["policyTypes"] == ["Ingress"], "egress stays open (the API server, webhook receivers)"
        rules = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["spec"]["ingress"]}
        assert rules == admitted and set(rules) <= served
    others = [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] not in
              ("onair-operator", "onair-gateway")]
    assert others == []
    test_pod = find(objects, "Pod", "onair-test-gateway")
    assert helm_test["podSelector"]["matchLabels"].items() <= test_pod["metadata"]["labels"].items()
    without_tests = render("--set-json", f"networkPolicy={json.dumps(values['networkPolicy'])}",
                           "--set", "tests.enabled=false")
    assert find(without_tests, "NetworkPolicy", "onair-gateway")["spec"]["ingress"][0]["from"] == [ingress_nginx]
    without_gateway = render("--set", "networkPolicy.enabled=true", "--set", "gateway.enabled=false")
    assert [o["metadata"]["name"] for o in without_gateway if o["kind"] == "NetworkPolicy"] == ["onair-operator"]


def test_render_peering_per_watched_namespace() -> None:
    objects = render("--set", "operator.watchNamespaces={news,sport}")
    peerings = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == "KopfPeering"}
    assert peerings == {("news", "onair"), ("sport", "onair"), ("onair-system", "onair")}
    assert not [o for o in objects if o["kind"] == "ClusterKopfPeering"]
    # Named namespaces: the operator's application rules, the gateway's writes of jobs and its read of
    # the encoder Pods are bound in those only.
    bound = {(o["metadata"]["namespace"], o["roleRef"]["name"]) for o in objects if o["kind"] == "RoleBinding"}
    watched = ("news", "sport", "onair-system")
    assert bound == {(ns, role) for ns in watched
                     for role in ("onair-operator", "onair-gateway-pods", "onair-gateway-jobs")} | \
        {("onair-system", "onair-gateway-ids"), ("onair-system", "onair-gateway-signing-key")}
    cluster_wide = {o["metadata"]["name"] for o in objects if o["kind"] == "ClusterRoleBinding"}
    assert cluster_wide == {"onair-operator-framework", "onair-gateway"}
    gateway_rules = find(objects, "ClusterRole", "onair-gateway")["rules"]
    assert not any("pods" in r["resources"] for r in gateway_rules)
    assert {verb for r in gateway_rules if "livejobs" in r["resources"] for verb in r["verbs"]} == {"get", "list",
                                                                                                    "watch"}
    gateway_env = env_of(find(objects, "Deployment", "onair-gateway"))
    assert json.loads(gateway_env["ONAIR_GATEWAY_WATCH_NAMESPACES"]) == ["news", "sport", "onair-system"]


def test_render_namespace_patterns_reach_the_gateway_as_the_operator_gets_them() -> None:
    """With a pattern the gateway serves the namespaces the operator's kopf matches, no others (a job
    it took elsewhere would never run), and reads the encoder Pods cluster-wide."""
    objects = render("--set", "operator.watchNamespaces={t-*}", "--set", "operator.createPeering=false")
    operator_env = env_of(find(objects, "Deployment", "onair-operator"))
    gateway_env = env_of(find(objects, "Deployment", "onair-gateway"))
    assert json.loads(gateway_env["ONAIR_GATEWAY_WATCH_NAMESPACES"]) == json.loads(
        operator_env["ONAIR_WATCH_NAMESPACES"]) == ["t-*", "onair-system"]
    cluster_wide = {o["roleRef"]["name"] for o in objects if o["kind"] == "ClusterRoleBinding"}
    assert {"onair-operator", "onair-gateway-pods", "onair-gateway-jobs"} <= cluster_wide


@pytest.mark.parametrize(("flag", "message"), [
    ("operator.replica=2", "replica"),
    ("gateway.ingres.enabled=true", "ingres"),
    ("ingest.address=public", "address"),
    ("imagee.tag=x", "imagee"),
    ("operator.watchNamespaces={Team_A}", "/operator/watchNamespaces/0"),
    ("gateway.apiKeys.keys[0].name=console,gateway.apiKeys.keys[0].role=admin", "/gateway/apiKeys/keys/0"),
    ("operator.podDisruptionBudget.maxUnavailable=0", "/operator/podDisruptionBudget/maxUnavailable"),
    ("encoder.resources.requests.cpu=half", "/encoder/resources/requests/cpu"),
    ("gateway.resources.limits.memory=512MB", "/gateway/resources/limits/memory"),
    ("s3.credentialsSecret=", "/s3/credentialsSecret"),
    ("gateway.apiKeys.existingSecret=other-ns/keys", "/gateway/apiKeys/existingSecret"),  # its Role: here
    ("gateway.jwtSecret.existingSecret=Bad_Name", "/gateway/jwtSecret/existingSecret"),
    ("ingest.previewPort=8090", "ingest.statusPort (8090) and ingest.previewPort (8090) must differ"),
    ("encoder.extraEnv[0].name=ONAIR_JOB_CONFIG,encoder.extraEnv[0].value=x", "/encoder/extraEnv/0/name"),
    ("encoder.workDirSizeLimit=lots", "/encoder/workDirSizeLimit"),
    ("encoder.pullAllowedNetworks={origin.internal}", "/encoder/pullAllowedNetworks/0"),
    ("encoder.storageAllowedNetworks={s3.internal}", "/encoder/storageAllowedNetworks/0"),
    ("containerSecurityContext.readOnlyRootFileSystem=false", "readOnlyRootFileSystem"),
    ("podSecurityContext.runAsNonroot=true", "runAsNonroot"),
    ("podSecurityContext.seccompProfile.type=runtimedefault", "/podSecurityContext/seccompProfile/type"),
])
def test_schema_rejects_misspelled_values(flag: str, message: str) -> None:
    result = helm("template", "onair", str(CHART), "--set", flag, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_render_for_a_platform_that_assigns_user_ids() -> None:
    """OpenShift's restricted-v2: no fixed uid anywhere, the encoder Pods' included (docs/operations.md)."""
    objects = render(*(f"--set=podSecurityContext.{key}=null" for key in ("runAsUser", "runAsGroup", "fsGroup")))
    for name in ("onair-operator", "onair-gateway"):
        assert "runAsUser" not in find(objects, "Deployment", name)["spec"]["template"]["spec"]["securityContext"]
    env = env_of(find(objects, "Deployment", "onair-operator"))
    assert json.loads(env["ONAIR_ENCODER_POD_SECURITY_CONTEXT"]) == {"runAsNonRoot": True,
                                                                     "seccompProfile": {"type": "RuntimeDefault"}}


def test_job_templates_are_checked_as_the_crd_checks_them_before_anything_is_installed(tmp_path: Path) -> None:
    ladder = {"name": "hd", "width": 1280, "height": 720, "fps": 30, "videoBitrate": 3_000_000}

    def values(*specs: dict[str, Any]) -> str:
        path = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump({"jobTemplates": {"items": [
            {"name": f"t-{index}", "spec": {"name": "T", "renditions": [ladder], **spec}}
            for index, spec in enumerate(specs)]}}))
        return str(path)

    gpu = render("-f", values({"id": 1, "hardwareAcceleration": "NVENC"}))
    assert find(gpu, "JobTemplate", "t-0")["spec"]["hardwareAcceleration"] == "NVENC"
    for specs, message in [(({"id": 1, "playlistWindow": 1},), "/jobTemplates/items/0/spec/playlistWindow"),
                           (({"id": 1}, {"id": 2, "segmentDurationSeconds": 60}),
                            "/jobTemplates/items/1/spec/segmentDurationSeconds"),
                           (({"id": 3}, {"id": 3}), "t-0 and t-1 both have spec.id 3")]:
        result = helm("template", "onair", str(CHART), "-f", values(*specs), check=False)
        assert result.returncode != 0 and message in result.stderr, result.stderr


@pytest.mark.parametrize("component", ["operator", "gateway"])
def test_render_refuses_an_existing_service_account_without_its_name(component: str) -> None:
    """Not the namespace's default ServiceAccount: every Pod running as that one would get the rules."""
    result = helm("template", "onair", str(CHART), "--set", f"{component}.serviceAccount.create=false", check=False)
    assert result.returncode != 0 and f"{component}.serviceAccount.name" in result.stderr
    named = render("--set", f"{component}.serviceAccount.create=false", "--set", f"{component}.serviceAccount.name=ops")
    binding = find(named, "ClusterRoleBinding", f"onair-{component}")
    assert binding["subjects"][0]["name"] == "ops"


def test_render_refuses_standalone_with_replicas() -> None:
    result = helm("template", "onair", str(CHART), "--set", "operator.standalone=true,operator.replicas=2", check=False)
    assert result.returncode != 0 and "replicas to 1" in result.stderr


def test_render_refuses_a_preview_relay_without_the_gateway() -> None:
    result = helm("template", "onair", str(CHART), "--set", "ingest.previewBaseUrl=wss://api.example.com",
                  "--set", "gateway.enabled=false", check=False)
    assert result.returncode != 0 and "needs gateway.enabled" in result.stderr
    result = helm("template", "onair", str(CHART), "--set", "ingest.previewBaseUrl=https://api.example.com",
                  check=False)
    assert result.returncode != 0 and "previewBaseUrl" in result.stderr


# -- install, upgrade, uninstall on the local platform ------------------------------------------------


def get_json(kubectl: Callable[..., Any], *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def pods_ready(kubectl: Callable[..., Any], namespace: str, component: str, count: int) -> list[dict[str, Any]]:
    """The component's ready Pods, once there are `count` of them (else none)."""
    pods = get_json(kubectl, "pods", "-n", namespace, "-l", f"app.kubernetes.io/component={component}")["items"]
    ready = [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))]
    return ready if len(ready) >= count else []


@pytest.fixture
def release(platform: PlatformInfo, kubectl: Callable[..., Any]) -> Iterator[tuple[str, str]]:
    """A fresh release namespace (h-*: no test operator watches it) and a job namespace beside it."""
    suffix = secrets.token_hex(3)
    system, jobs = f"h-sys-{suffix}", f"h-jobs-{suffix}"
    kubectl("create", "namespace", jobs)
    yield system, jobs
    helm("uninstall", "onair", "-n", system, "--timeout", "60s", check=False)
    for ns in (system, jobs):
        kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def test_install_upgrade_uninstall(platform: PlatformInfo, kubectl: Callable[..., Any], tmp_path: Path,
                                   release: tuple[str, str]) -> None:
    system, jobs = release
    dev_values = tmp_path / "dev-values.yaml"
    operator_kubeconfig, gateway_kubeconfig = tmp_path / "operator.kubeconfig", tmp_path / "gateway.kubeconfig"
    # The process node reports every Pod as BestEffort (and the API server refuses that change of
    # qosClass for a Pod with requests), so the Pods here get none.
    no_resources = {"requests": None, "limits": None}
    api_key, project = secrets.token_urlsafe(24), "8f2c4d1e-3b6a-4c9d-8e7f-1a2b3c4d5e6f"
    kubectl("label", "namespace", jobs, f"onair.dev/project-id={project}")
    base: dict[str, Any] = {
        # The process node runs commands from this machine; the image is ignored there.
        "operator": {"replicas": 1, "watchNamespaces": [jobs], "command": [str(BIN / "onair-operator")],
                     "resources": no_resources},
        "gateway": {"replicas": 1, "command": [str(BIN / "onair-gateway")], "resources": no_resources,
                    "apiKeys": {"keys": [{"name": "t", "key": api_key, "projects": ["*"], "role": "admin"}]}},
        "encoder": {"command": [str(BIN / "onair-encoder")], "resources": no_resources},
        "ingest": {"address": "pod-ip"},
        "s3": {"endpoint": platform.s3_endpoint, "region": platform.s3_region},
        "dev": {"listenOnPodIP": True},
        # Valid as the API server checks them (this platform's network enforces none).
        "networkPolicy": {"enabled": True, "metricsFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]},
    }
    dev_values.write_text(yaml.safe_dump(base))
    helm("install", "onair", str(CHART), "-n", system, "--create-namespace", "-f", str(dev_values),
         "--timeout", "120s")

    # Everything the chart declares exists, RBAC included; the kopf peering CRDs came from crds/.
    for kind, name in [("deployment", "onair-operator"), ("deployment", "onair-gateway"),
                       ("service", "onair-gateway"), ("serviceaccount", "onair-operator"),
                       ("secret", "onair-webhooks"), ("secret", "onair-gateway"),
                       ("jobtemplates.onair.dev", "ladder-720p"), ("kopfpeerings.kopf.dev", "onair"),
                       ("networkpolicy", "onair-operator"), ("networkpolicy", "onair-gateway")]:
        kubectl("-n", system, "get", kind, name)
    kubectl("-n", jobs, "get", "kopfpeerings.kopf.dev", "onair")
    kubectl("get", "crd", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev", "livejobs.onair.dev")
    for verb, resource, ns in [("create", "pods", jobs), ("patch", "livejobs.onair.dev --subresource=status", jobs),
                               ("list", "customresourcedefinitions.apiextensions.k8s.io", None),
                               ("patch", "kopfpeerings.kopf.dev/onair", jobs)]:
        args = ["auth", "can-i", verb, *resource.split(), f"--as=system:serviceaccount:{system}:onair-operator"]
        assert kubectl(*args, *(["-n", ns] if ns else [])).stdout.strip() == "yes", (verb, resource)
    for verb, resource in [("delete", "secrets"), ("get", "secrets"), ("patch", "livejobs.onair.dev"),
                           ("patch", "kopfpeerings.kopf.dev/another-operator")]:
        answer = kubectl("auth", "can-i", verb, resource, "-n", jobs,
                         f"--as=system:serviceaccount:{system}:onair-operator", check=False).stdout.strip()
        assert answer == "no", (verb, resource)
    # Only the watched namespaces: none of its rights in a namespace it does not watch.
    for verb, resource in [("create", "pods"), ("create", "secrets"), ("list", "pods"), ("create", "events")]:
        answer = kubectl("auth", "can-i", verb, resource, "-n", "default",
                         f"--as=system:serviceaccount:{system}:onair-operator", check=False).stdout.strip()
        assert answer == "no", (verb, resource, "default")
    assert kubectl("auth", "can-i", "create", "events", "-n", jobs,
                   f"--as=system:serviceaccount:{system}:onair-operator").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "create", "livejobs.onair.dev", "-n", jobs,
                   f"--as=system:serviceaccount:{system}:onair-gateway").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "get", "secrets", "-n", jobs, f"--as=system:serviceaccount:{system}:onair-gateway",
                   check=False).stdout.strip() == "no", "the gateway derives stream keys; it reads no Secrets"
    # Of the Secrets, its own alone (the JWT signing key and the API keys), by name.
    for verb, resource, allowed in [("watch", "secrets/onair-gateway", "yes"), ("get", "secrets/onair-webhooks", "no"),
                                    ("list", "secrets", "no"), ("patch", "secrets/onair-gateway", "no")]:
        answer = kubectl("auth", "can-i", verb, resource, "-n", system,
                         f"--as=system:serviceaccount:{system}:onair-gateway", check=False).stdout.strip()
        assert answer == allowed, (verb, resource)
    # The encoder Pods are read where the operator makes them, not in every namespace.
    for ns, allowed in [(jobs, "yes"), ("default", "no")]:
        answer = kubectl("auth", "can-i", "list", "pods", "-n", ns,
                         f"--as=system:serviceaccount:{system}:onair-gateway", check=False).stdout.strip()
        assert answer == allowed, ("gateway list pods", ns)
    # Of all it may write besides jobs, one ConfigMap (its id counters): not a namespace, not another ConfigMap.
    for verb, resource, ns, allowed in [("patch", "configmaps/onair-gateway-ids", system, "yes"),
                                        ("patch", "configmaps/other", system, "no"),
                                        ("create", "configmaps", system, "no"),
                                        ("patch", f"namespaces/{jobs}", None, "no")]:
        answer = kubectl("auth", "can-i", verb, resource, *(["-n", ns] if ns else []),
                         f"--as=system:serviceaccount:{system}:onair-gateway", check=False).stdout.strip()
        assert answer == allowed, (verb, resource)
    webhook_key = get_json(kubectl, "secret", "onair-webhooks", "-n", system)["data"]["webhook-secret"]
    seed = get_json(kubectl, "secret", "onair-stream-keys", "-n", system)["data"]["stream-key-seed"]

    # Upgrade: hand the Pods kubeconfigs with their own ServiceAccounts' tokens (dev only), so they run
    # on the process node with exactly the chart's RBAC.
    local = LocalPlatform(Path(platform.state_dir))
    local.service_account_kubeconfig(platform, system, "onair-operator", operator_kubeconfig)
    local.service_account_kubeconfig(platform, system, "onair-gateway", gateway_kubeconfig)
    base["dev"].update(operatorKubeconfig=str(operator_kubeconfig), gatewayKubeconfig=str(gateway_kubeconfig))
    dev_values.write_text(yaml.safe_dump(base))
    helm("upgrade", "onair", str(CHART), "-n", system, "-f", str(dev_values), "--timeout", "120s")
    assert get_json(kubectl, "secret", "onair-webhooks", "-n", system)["data"]["webhook-secret"] == webhook_key, \
        "the generated webhook key survives upgrades"
    assert get_json(kubectl, "secret", "onair-stream-keys", "-n", system)["data"]["stream-key-seed"] == seed, \
        "the stream-key seed survives upgrades (or every key would change)"

    wait_until(lambda: pods_ready(kubectl, system, "operator", 1), 120, "a ready operator")
    gateways = wait_until(lambda: pods_ready(kubectl, system, "gateway", 1), 120, "a ready gateway (its caches synced)")

    # The operator registered in the chart's peering object (kopf's peering is mandatory here).
    def peers() -> dict[str, Any]:
        return get_json(kubectl, "kopfpeerings.kopf.dev", "onair", "-n", jobs).get("status") or {}
    wait_until(lambda: any(name.startswith("onair-operator-") for name in peers()), 60,
               "the operator in the KopfPeering")

    # The gateway answers on its Pod IP with the chart's JWT key and its default templates in the cache.
    # The ready one: the Pod from before the upgrade (no credentials, never ready) may still be there.
    gateway = f"http://{gateways[0]['status']['podIP']}:8080"
    with urllib.request.urlopen(f"{gateway}/readyz", timeout=5) as response:
        assert json.loads(response.read())["ready"] is True
    # A create through it, with nothing but the chart's RBAC: the job, and its id leased from the ConfigMap.
    token = post_json(f"{gateway}/api/v1/login", {"apiKey": api_key})["result"]["token"]
    made = post_json(f"{gateway}/api/v1/projects/{project}/livejobs",
                     {"jobTemplateId": 2, "bucket": platform.s3_bucket, "serverType": 0, "online": False},
                     token)["result"]
    counters = get_json(kubectl, "configmap", "onair-gateway-ids", "-n", system)["data"]
    assert int(counters[jobs]) > made["id"] >= 1
    kubectl("-n", jobs, "delete", "livejob", made["name"])

    # A key rotated in the Secret is in force within seconds, without a restart, and the tokens of the key
    # it replaced are refused from then on.
    rotated_key = secrets.token_urlsafe(24)
    rotated = json.dumps([{"name": "t", "key": rotated_key, "projects": ["*"], "role": "admin"}])
    kubectl("-n", system, "patch", "secret", "onair-gateway", "--type=merge",
            "-p", json.dumps({"stringData": {"api-keys.yaml": rotated}}))
    wait_until(lambda: status_of(f"{gateway}/api/v1/login", {"apiKey": rotated_key}) == 200, 30,
               "the rotated key to be in force")
    assert status_of(f"{gateway}/api/v1/login", {"apiKey": api_key}) == 401
    assert status_of(f"{gateway}/api/v1/projects/{project}/livejobs", token=token) == 401
    assert pods_ready(kubectl, system, "gateway", 1)[0]["metadata"]["uid"] == gateways[0]["metadata"]["uid"]
    token = post_json(f"{gateway}/api/v1/login", {"apiKey": rotated_key})["result"]["token"]

    # So is a new JWT signing key, and every token signed with the one before is refused: clients log in again.
    kubectl("-n", system, "patch", "secret", "onair-gateway", "--type=merge",
            "-p", json.dumps({"stringData": {"jwt-secret": secrets.token_urlsafe(36)}}))
    wait_until(lambda: status_of(f"{gateway}/api/v1/projects/{project}/livejobs", token=token) == 401, 30,
               "the tokens of the old signing key to be refused")
    token = post_json(f"{gateway}/api/v1/login", {"apiKey": rotated_key})["result"]["token"]
    assert status_of(f"{gateway}/api/v1/projects/{project}/livejobs", token=token) == 200
    assert pods_ready(kubectl, system, "gateway", 1)[0]["metadata"]["uid"] == gateways[0]["metadata"]["uid"]

    # An example LiveJob, reconciled by the chart's operator, reaches WaitingForInput.
    kubectl("-n", jobs, "create", "secret", "generic", "onair-s3-credentials",
            f"--from-literal=AWS_ACCESS_KEY_ID={platform.s3_access_key}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={platform.s3_secret_key}")
    job = yaml.safe_load((ROOT / "examples" / "livejob-rtmp.yaml").read_text())
    job["spec"]["destination"]["bucket"] = platform.s3_bucket
    kubectl("-n", jobs, "apply", "-f", "-", input=json.dumps(job))

    def phase() -> str | None:
        return (get_json(kubectl, "livejob", "rtmp-demo", "-n", jobs).get("status") or {}).get("phase")
    try:
        wait_until(lambda: phase() == "WaitingForInput", 120, "the example LiveJob to reach WaitingForInput")
    except AssertionError:
        log_dir = Path(platform.state_dir) / "process-node" / "pods"
        for log in sorted(log_dir.glob(f"{system}_*/*.log")) + sorted(log_dir.glob(f"{jobs}_*/*.log")):
            print(f"--- {log.parent.name}/{log.name}\n" + "\n".join(log.read_text().splitlines()[-30:]))
        raise
    created = get_json(kubectl, "livejob", "rtmp-demo", "-n", jobs)
    status = created["status"]
    assert status["urls"]["ingest"].startswith("rtmp://")
    # The encoder's key is the one the gateway shows: both derive it from the chart's seed.
    key = get_json(kubectl, "secret", status["streamKeySecret"], "-n", jobs)["data"]["streamKey"]
    assert base64.b64decode(key).decode() == derive_stream_key(base64.b64decode(seed).decode(), jobs, "rtmp-demo",
                                                               created["metadata"]["uid"])
    # The gateway's streamers view finds the encoder Pod with nothing but the chart's namespaced Pod read.
    def streamer_jobs() -> list[str]:
        request = urllib.request.Request(f"{gateway}/api/v1/streamers", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return [row["stats"]["job"] for row in json.loads(response.read())["result"]["streamers"]
                    if row["role"] == "encoder"]
    wait_until(lambda: "rtmp-demo" in streamer_jobs(), 30, "the encoder Pod in the gateway's streamers view")
    kubectl("-n", jobs, "delete", "livejob", "rtmp-demo", "--wait=false")
    wait_until(lambda: not get_json(kubectl, "pods", "-n", jobs)["items"], 60, "the encoder Pod to go")

    # Uninstall keeps the two keys the jobs' stream keys, control keys and webhook keys derive from; a
    # reinstall takes them back, and the jobs' keys stay right.
    helm("uninstall", "onair", "-n", system, "--timeout", "120s")
    kept = {"onair-webhooks": ("webhook-secret", webhook_key), "onair-stream-keys": ("stream-key-seed", seed)}
    for name, (key, value) in kept.items():
        assert get_json(kubectl, "secret", name, "-n", system)["data"][key] == value, name
    helm("install", "onair", str(CHART), "-n", system, "-f", str(dev_values), "--timeout", "120s")
    for name, (key, value) in kept.items():
        assert get_json(kubectl, "secret", name, "-n", system)["data"][key] == value, f"{name} after a reinstall"
    helm("uninstall", "onair", "-n", system, "--timeout", "120s")
    # Then nothing of the release is left but the CRDs and those two, until deleted by hand.
    kubectl("-n", system, "delete", "secret", *kept)
    selector = "app.kubernetes.io/instance=onair"
    kinds = "deployments,services,secrets,serviceaccounts,poddisruptionbudgets,jobtemplates.onair.dev"
    for ns in (system, jobs):
        def remaining(ns: str = ns) -> list[str]:
            items = get_json(kubectl, kinds + ",kopfpeerings.kopf.dev,rolebindings", "-n", ns, "-l", selector)
            return [f"{i['kind']}/{i['metadata']['name']}" for i in items["items"]
                    if not i["metadata"].get("deletionTimestamp")]
        wait_until(lambda: not remaining(), 60, f"nothing of the release left in {ns}")
    cluster_left = get_json(kubectl, "clusterroles,clusterrolebindings,clusterkopfpeerings.kopf.dev", "-l", selector)
    assert not cluster_left["items"]
    kubectl("get", "crd", "livejobs.onair.dev", "kopfpeerings.kopf.dev")


def status_of(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> int:
    """The HTTP status of a GET (or, with a body, a POST)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), headers=headers,
                                     method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def post_json(url: str, body: dict[str, Any], token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_pods_need_no_platform_specific_values_by_default() -> None:
    """The dev-only values stay off by default: nothing in a real cluster points at local paths."""
    objects = render()
    rendered = json.dumps(objects)
    assert os.sep + "work" not in rendered and "status.podIP" not in rendered
