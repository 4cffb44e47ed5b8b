#!/usr/bin/env bash
# A kind cluster with Kueue 0.16.1 for scripts/e2e.sh (context `kind-vast`):
#   scripts/kind/up.sh && scripts/e2e.sh --context kind-vast
# Needs kind, kubectl and Docker (or podman) on the machine; `kind delete cluster --name vast`
# removes it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kueue_version="${KUEUE_VERSION:-v0.16.1}"
for tool in kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind/up.sh: $tool is not on PATH" >&2; exit 2; }
done
kind get clusters 2>/dev/null | grep -qx vast || kind create cluster --name vast --config "$here/cluster.yaml"
kubectl --context kind-vast apply --server-side \
  -f "https://github.com/kubernetes-sigs/kueue/releases/download/${kueue_version}/manifests.yaml"
kubectl --context kind-vast -n kueue-system wait --for=condition=Available \
  deployment/kueue-controller-manager --timeout=300s
# Kueue's webhook must answer before vast creates queues (setup waits too, bounded).
kubectl --context kind-vast wait --for=condition=Established --timeout=120s \
  crd/clusterqueues.kueue.x-k8s.io crd/localqueues.kueue.x-k8s.io crd/resourceflavors.kueue.x-k8s.io crd/workloads.kueue.x-k8s.io
echo "kind cluster 'vast' with Kueue ${kueue_version}: run scripts/e2e.sh --context kind-vast"
