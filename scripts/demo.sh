#!/usr/bin/env bash
# The main job as far as it exists today, end to end on the embedded default (the simulated
# cluster, vast-sim): start the sim, initialise the example project, prepare a run (manifests,
# Kueue queues with quota computed from the sim's nodes, Jobs), deploy it with the real kubectl,
# wait for the Jobs, then run a workflow through the engine and inspect it.
# Needs: cargo, kubectl, python3. Leaves nothing behind but ./target.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

echo "== building vast and vast-sim"
cargo build --quiet --bin vast && cargo build --quiet -p vast-sim --bin vast-sim
vast="$repo/target/debug/vast"
sim="$repo/target/debug/vast-sim"

work="$(mktemp -d)"
sim_pid=""
cleanup() {
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting the simulated cluster"
"$sim" serve --kubeconfig "$work/kubeconfig" >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 100); do [ -s "$work/kubeconfig" ] && break; sleep 0.1; done
export KUBECONFIG="$work/kubeconfig"
kubectl get nodes

echo "== the example project"
cp -r "$repo/examples/growth_sim" "$work/project"
cd "$work/project"
"$vast" init growth_sim.vast
echo "configurations: $("$vast" configuration list | grep -c '^name:')"

echo "== prepare-run (quota computed from the cluster's nodes and pods)"
"$vast" execution cluster prepare-run out -k rke2
run_id="$(sed -n 's/^# vast run //p' out/README.md)"

echo "== deploying with kubectl: S3 credentials, robovast pod, Kueue queues, Jobs"
kubectl apply -f - <<YAML
apiVersion: v1
kind: Secret
metadata: {name: vast-s3-credentials, namespace: default}
stringData:
  access-key: "vast-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
  secret-key: "$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
YAML
kubectl apply -n default -f out/robovast-manifest.yaml
kubectl wait -n default --for=condition=ready pod/robovast --timeout=60s
kubectl apply -f out/kueue-queue-setup.yaml
# out_template/ to the run's bucket through a kube-rs port-forward (upload_configs.py does the
# same with kubectl + python3 on a real cluster; the sim does not speak kubectl's SPDY
# port-forward)
"$vast" execution cluster upload-configs out
kubectl apply -f out/all-jobs.yaml >/dev/null
echo "created $(ls out/jobs | wc -l) Jobs for run $run_id; Kueue admits them within the quota"
kubectl wait --for=condition=complete job -l "run-id=$run_id" --timeout=120s >/dev/null
kubectl get jobs -l "run-id=$run_id" | sed -n 1,6p
kubectl get workloads | sed -n 1,4p
echo "results of one Job, as seen from the archiver container (kubectl exec):"
kubectl exec robovast -c archiver -- sh -c "cd /data/minio/$run_id && find test-1-1/0 -type f | sort"

echo "== a workflow through the engine (journaled, resumable), then inspected"
export VAST_STATE_DIR="$work/state"
"$vast" selftest --items 200
engine_run="$("$vast" runs list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')"
"$vast" runs show "$engine_run"
"$vast" runs graph selftest
echo "== done: the simulated cluster stops now"
