#!/usr/bin/env bash
# The main job end to end on the embedded default, the simulated cluster (vast-sim): start the
# sim, initialise the example project, `setup` the cluster (Kueue queues with the quota
# computed from the sim's nodes, S3 credentials, the robovast pod), `run --follow` the
# campaign (configurations uploaded to the run's bucket, one Job per configuration x run,
# admitted by Kueue, watched until all finished), `monitor --once`, `download` the results,
# and show the run as the engine recorded it (`vast runs show`).
# Needs: cargo (and kubectl, only to show the cluster). Leaves nothing behind but the cargo
# target directory (`CARGO_TARGET_DIR` is honoured). On failure the sim's log is shown.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

echo "== building vast and vast-sim (cargo's progress below; a first build takes minutes)"
cargo build --bin vast && cargo build -p vast-sim --bin vast-sim
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac
vast="$target/debug/vast"
sim="$target/debug/vast-sim"
for b in "$vast" "$sim"; do
  [ -x "$b" ] || { echo "demo: $b was not built (CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-unset})" >&2; exit 1; }
done

work="$(mktemp -d)"
sim_pid=""
cleanup() {
  status=$?
  if [ "$status" -ne 0 ] && [ -s "$work/sim.log" ]; then
    echo "== demo failed (exit $status); the simulated cluster's log (last 40 lines):" >&2
    tail -40 "$work/sim.log" >&2
  fi
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

echo "== starting the simulated cluster"
"$sim" serve --kubeconfig "$work/kubeconfig" >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 100); do [ -s "$work/kubeconfig" ] && break; sleep 0.1; done
[ -s "$work/kubeconfig" ] || { echo "demo: the simulated cluster did not start" >&2; exit 1; }
export KUBECONFIG="$work/kubeconfig"
if command -v kubectl >/dev/null 2>&1; then kubectl get nodes; fi

echo "== vast init (examples/growth_sim: 2 configuration entries -> 5 configurations, 3 runs each)"
cp -r "$repo/examples/growth_sim" "$work/project"
cd "$work/project"
"$vast" init growth_sim.vast

echo "== vast execution cluster setup rke2"
"$vast" execution cluster setup rke2
if command -v kubectl >/dev/null 2>&1; then kubectl get pods,clusterqueues,localqueues; fi

echo "== vast execution cluster run --follow"
"$vast" execution cluster run --follow

echo "== vast execution cluster wait (for CI: exit 0 all succeeded, 1 failed or lost, 3 timeout, 4 stalled)"
"$vast" execution cluster wait --timeout 1m

echo "== vast execution cluster monitor --once"
"$vast" execution cluster monitor --once

echo "== vast execution cluster download (archive built in the pod, fetched with Range resume, verified, extracted; then the remote copy removed)"
"$vast" execution cluster download
find results -maxdepth 2 | sort | head -20

echo "== vast runs list / runs show (the run as the engine journaled it)"
"$vast" runs list
run_id="$("$vast" runs list --json | python3 -c 'import json,sys; print([r["id"] for r in json.load(sys.stdin) if r["operation"]=="run"][-1])' 2>/dev/null || "$vast" runs list | awk '$2=="run"{id=$1} END{print id}')"
"$vast" runs show "$run_id"
echo "== done: the simulated cluster stops now"
