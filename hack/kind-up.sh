#!/usr/bin/env bash
# onair on a local kind cluster, for people with Docker (CI here has none and cannot run this):
# creates the cluster, builds the image, loads it into kind, installs the chart with an S3 server
# (SeaweedFS) for the output, port-forwards the gateway to 127.0.0.1:8080 and applies a sample LiveJob.
#
#   hack/kind-up.sh            # up (idempotent: reuses the cluster and the release)
#   hack/kind-up.sh down       # delete the cluster
#
# Needs: docker, kind, kubectl, helm. Settings (environment): CLUSTER (onair), IMAGE
# (onair:dev), NAMESPACE (onair-system), DEMO_NAMESPACE (demo), GATEWAY_PORT (8080).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cluster="${CLUSTER:-onair}"
image="${IMAGE:-onair:dev}"
namespace="${NAMESPACE:-onair-system}"
demo="${DEMO_NAMESPACE:-demo}"
gateway_port="${GATEWAY_PORT:-8080}"
context="kind-$cluster"
step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
kc() { kubectl --context "$context" "$@"; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

if [[ "${1:-up}" == "down" ]]; then
  step "deleting kind cluster $cluster"
  kind delete cluster --name "$cluster"
  exit 0
fi

if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  step "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --wait 120s
fi

step "building $image"
docker build -t "$image" "$root"
step "loading $image into kind"
kind load docker-image "$image" --name "$cluster"

step "S3 (SeaweedFS) in namespace $namespace"
kc create namespace "$namespace" --dry-run=client -o yaml | kc apply -f -
kc -n "$namespace" apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: seaweedfs, labels: {app: seaweedfs}}
spec:
  selector: {matchLabels: {app: seaweedfs}}
  template:
    metadata: {labels: {app: seaweedfs}}
    spec:
      containers:
        - name: weed
          image: chrislusf/seaweedfs:latest
          args: ["server", "-s3", "-dir=/data", "-s3.port=8333"]
          ports: [{containerPort: 8333, name: s3}]
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: seaweedfs}
spec:
  selector: {app: seaweedfs}
  ports: [{name: s3, port: 8333, targetPort: s3}]
YAML

step "bucket onair-live (the examples' destination)"
kc -n "$namespace" rollout status deployment/seaweedfs --timeout=180s
# The S3 gateway answers a little after the Pod is ready: retry until the bucket exists.
for attempt in $(seq 1 30); do
  if echo "s3.bucket.create -name onair-live" | kc -n "$namespace" exec -i deploy/seaweedfs -- weed shell \
       -master=localhost:9333 >/dev/null 2>&1 \
     && echo "s3.bucket.list" | kc -n "$namespace" exec -i deploy/seaweedfs -- weed shell -master=localhost:9333 \
       2>/dev/null | grep -q onair-live; then
    break
  fi
  [[ $attempt == 30 ]] && die "could not create bucket onair-live in SeaweedFS"
  printf '  S3 not answering yet (%s/30)\n' "$attempt" >&2
  sleep 2
done

step "installing the chart (release onair)"
repository="${image%:*}"
tag="${image##*:}"
helm upgrade --install onair "$root/charts/onair" --kube-context "$context" \
  --namespace "$namespace" --create-namespace --wait --timeout 5m \
  --set image.registry= --set image.repository="$repository" --set image.tag="$tag" \
  --set image.pullPolicy=Never \
  --set operator.replicas=1 --set gateway.replicas=1 \
  --set ingest.host=127.0.0.1 \
  --set s3.endpoint="http://seaweedfs.$namespace.svc:8333" \
  --set-json 'gateway.apiKeys.keys=[{"name":"demo","key":"demo-key-change-me-0000","projects":["*"],"role":"admin"}]'

step "a sample LiveJob in namespace $demo"
kc create namespace "$demo" --dry-run=client -o yaml | kc apply -f -
# A project of the REST gateway is a namespace carrying its id.
kc label namespace "$demo" onair.dev/project-id=6f1d2c3b-4a5e-4f60-9a7b-8c9d0e1f2a3b --overwrite
kc -n "$demo" create secret generic onair-s3-credentials \
  --from-literal=AWS_ACCESS_KEY_ID=any --from-literal=AWS_SECRET_ACCESS_KEY=any \
  --dry-run=client -o yaml | kc apply -f -
kc -n "$demo" apply -f "$root/examples/livejob-rtmp.yaml"
kc -n "$demo" wait livejob/rtmp-demo --for=jsonpath='{.status.phase}'=WaitingForInput --timeout=180s \
  || kc -n "$demo" describe livejob rtmp-demo
kc -n "$demo" get livejobs

step "port-forwarding the gateway to http://127.0.0.1:$gateway_port (Ctrl-C to stop)"
cat >&2 <<TEXT
  curl -s http://127.0.0.1:$gateway_port/readyz
  curl -s -X POST http://127.0.0.1:$gateway_port/api/v1/login -H 'Content-Type: application/json' \\
    -d '{"apiKey": "demo-key-change-me-0000"}'
  Namespace $demo is project 6f1d2c3b-4a5e-4f60-9a7b-8c9d0e1f2a3b:
  curl -s http://127.0.0.1:$gateway_port/api/v1/projects/6f1d2c3b-4a5e-4f60-9a7b-8c9d0e1f2a3b/livejobs \\
    -H "Authorization: Bearer <token from the login>"
  Publish (in another shell; ingest URLs name 127.0.0.1, so forward the job's Service first):
    kubectl --context $context -n $demo port-forward \\
      "service/\$(kubectl --context $context -n $demo get livejob rtmp-demo -o jsonpath='{.status.serviceName}')" 1935:1935
    secret=\$(kubectl --context $context -n $demo get livejob rtmp-demo -o jsonpath='{.status.streamKeySecret}')
    key=\$(kubectl --context $context -n $demo get secret "\$secret" -o jsonpath='{.data.streamKey}' | base64 -d)
    ffmpeg -re -i input.mp4 -c copy -f flv \\
      "\$(kubectl --context $context -n $demo get livejob rtmp-demo -o jsonpath='{.status.urls.ingest}')\$key"
TEXT
exec kubectl --context "$context" -n "$namespace" port-forward service/onair-gateway "$gateway_port:80"
