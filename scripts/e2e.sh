#!/usr/bin/env bash
# End-to-end check of vast on whatever cluster a kubeconfig context names: the simulated one
# (CI), kind with Kueue, rke2 or GKE. Runs what a user runs and checks the results:
#
#   setup → run --follow → wait → monitor → download → run-cleanup → cleanup
#
# Usage: scripts/e2e.sh --context CTX [--config rke2|gcp|minikube|azure] [-o key=value]…
#                       [--project DIR] [--runs N] [--keep] [--reuse-setup]
#
#   --context CTX     kubeconfig context (required: this script changes that cluster)
#   --config NAME     cluster config for setup (default rke2)
#   -o key=value      cluster option for setup (repeatable), e.g. -o spot=true
#   --project DIR     a directory with one .vast file (default examples/growth_sim, whose
#                     scenario is a shell script any image with sh runs)
#   --runs N          runs per configuration (default 2)
#   --keep            leave the project directory (and on failure the cluster) as it is
#   --reuse-setup     the cluster is already set up by vast: skip setup and cleanup
#
# Environment: VAST (the vast binary; default: `vast` on PATH, else cargo builds one),
# KUBECONFIG as usual. Needs python3 (to read vast's JSON); kubectl is used when present for
# extra checks of the cluster. Exit 0 when every check passed; the first failed check stops
# the script with its reason (and, unless --keep, a best-effort cleanup).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

context="" config="rke2" project="$repo/examples/growth_sim" runs=2 keep=0 reuse=0
options=()
while [ $# -gt 0 ]; do
  case "$1" in
    --context|-x) context="${2:?--context needs a value}"; shift 2 ;;
    --config) config="${2:?--config needs a value}"; shift 2 ;;
    -o|--option) options+=(-o "${2:?-o needs key=value}"); shift 2 ;;
    --project) project="${2:?--project needs a directory}"; shift 2 ;;
    --runs) runs="${2:?--runs needs a number}"; shift 2 ;;
    --keep) keep=1; shift ;;
    --reuse-setup) reuse=1; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "e2e: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$context" ] || { echo "e2e: --context CTX is required (this script changes that cluster)" >&2; exit 2; }
case "$runs" in ''|*[!0-9]*|0) echo "e2e: --runs must be a positive number, got '$runs'" >&2; exit 2 ;; esac
command -v python3 >/dev/null || { echo "e2e: python3 is needed to read vast's JSON" >&2; exit 2; }

if [ -z "${VAST:-}" ]; then
  if command -v vast >/dev/null 2>&1; then
    VAST="$(command -v vast)"
  else
    echo "== building vast"
    (cd "$repo" && cargo build --bin vast)
    target="${CARGO_TARGET_DIR:-$repo/target}"
    case "$target" in /*) ;; *) target="$repo/$target" ;; esac
    VAST="$target/debug/vast"
  fi
fi
[ -x "$VAST" ] || { echo "e2e: $VAST is not an executable vast" >&2; exit 2; }
vast() { "$VAST" "$@"; }

vast_files=("$project"/*.vast)
[ -f "${vast_files[0]}" ] || { echo "e2e: no .vast file in $project" >&2; exit 2; }
[ "${#vast_files[@]}" -eq 1 ] || { echo "e2e: more than one .vast file in $project" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/vast-e2e.XXXXXX")"
checks=0
stage="start"
set_up=0
finish() {
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "FAIL  e2e stopped in '$stage' (exit $status); project: $work/project" >&2
    if [ "$keep" -eq 0 ] && [ "$set_up" -eq 1 ] && [ "$reuse" -eq 0 ]; then
      echo "      best-effort cleanup of the cluster (--keep leaves it)" >&2
      (cd "$work/project" && vast execution cluster cleanup -x "$context" -q >/dev/null 2>&1) || true
    fi
  else
    echo "PASS  $checks checks on context '$context'"
  fi
  [ "$keep" -eq 1 ] || [ "$status" -ne 0 ] || rm -rf "$work"
  exit "$status"
}
trap finish EXIT

ok() { checks=$((checks + 1)); echo "ok    $*"; }
fail() { echo "FAIL  $*" >&2; exit 1; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); $1"; }

cp -r "$project" "$work/project"
cd "$work/project"
vast init "$(basename "${vast_files[0]}")" >/dev/null
ok "project $(basename "${vast_files[0]}") initialised in $work/project"

stage="doctor"
if vast doctor -x "$context" >"$work/doctor.txt" 2>&1; then
  ok "vast doctor: nothing failed"
else
  # A saved setup from an earlier attempt or a missing helm are warnings; a fail is not.
  cat "$work/doctor.txt" >&2
  [ "$reuse" -eq 1 ] || fail "vast doctor reports a failure on '$context'"
fi

stage="setup"
if [ "$reuse" -eq 0 ]; then
  vast execution cluster setup "$config" -x "$context" ${options[@]+"${options[@]}"}
  set_up=1
  ok "setup $config"
fi

stage="run --follow"
vast execution cluster run -x "$context" -r "$runs" --follow
run_id="$(vast runs list --json | json 'print([r["id"] for r in d if r["operation"]=="run"][-1])')"
expected="$(vast configuration list | grep -c '^name: ' || true)"
[ "$expected" -gt 0 ] || fail "vast configuration list generated no configuration"
jobs=$((expected * runs))
ok "run $run_id finished ($expected configurations × $runs runs = $jobs Jobs)"

stage="wait"
vast execution cluster wait -x "$context" --run-id "$run_id" --timeout 10m --json >"$work/wait.json" \
  || fail "wait exited $? for $run_id: $(cat "$work/wait.json")"
ok "wait: every run of $run_id succeeded"

stage="monitor"
vast execution cluster monitor -x "$context" --once --json >"$work/monitor.json"
python3 - "$work/monitor.json" "$run_id" "$jobs" <<'EOF' || fail "monitor does not show $run_id as $jobs/$jobs finished"
import json, sys
path, run_id, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
doc = json.load(open(path))
def runs(node):
    if isinstance(node, dict):
        if node.get("run_id") == run_id or node.get("run") == run_id or node.get("id") == run_id:
            yield node
        for v in node.values():
            yield from runs(v)
    elif isinstance(node, list):
        for v in node:
            yield from runs(v)
found = list(runs(doc))
assert found, f"{run_id} not in monitor's output"
r = found[0]
assert r.get("total") == jobs and r.get("finished") == jobs, r
assert r.get("ok", r.get("succeeded")) == jobs, r
EOF
ok "monitor: $run_id $jobs/$jobs finished, $jobs ok"

stage="download"
vast execution cluster download -x "$context" -i "$run_id" -o "$work/results"
results="$work/results/$run_id"
[ -d "$results" ] || fail "download did not create $results"
for cfg in $(vast configuration list | sed -n 's/^name: //p'); do
  [ -d "$results/$cfg" ] || fail "no results for configuration $cfg in $results"
  for n in $(seq 0 $((runs - 1))); do
    [ -d "$results/$cfg/$n" ] || fail "no results of run $n of $cfg in $results"
    [ -n "$(ls -A "$results/$cfg/$n")" ] || fail "results of run $n of $cfg are empty"
  done
done
ok "download: $expected configurations × $runs runs in $results"

stage="run-cleanup"
# --follow removed the first run's Jobs; a second, detached run is removed while it may still run.
vast execution cluster run -x "$context" -r 1 >"$work/run2.txt"
run2="$(vast runs list --json | json 'print([r["id"] for r in d if r["operation"]=="run"][-1])')"
[ "$run2" != "$run_id" ] || fail "the detached run did not start a new run"
vast execution cluster run-cleanup -x "$context" --run-id "$run2"
vast execution cluster monitor -x "$context" --once --json >"$work/monitor2.json"
python3 - "$work/monitor2.json" "$run2" <<'EOF2' || fail "run-cleanup left Jobs of $run2 running or pending"
import json, sys
doc = json.load(open(sys.argv[1]))
def runs(node):
    if isinstance(node, dict):
        if sys.argv[2] in (node.get("run_id"), node.get("run"), node.get("id")):
            yield node
        for v in node.values():
            yield from runs(v)
    elif isinstance(node, list):
        for v in node:
            yield from runs(v)
for r in runs(doc):
    assert not r.get("running") and not r.get("pending"), r
EOF2
if command -v kubectl >/dev/null 2>&1; then
  left="$(kubectl --context "$context" get jobs -A -l run-id -o name 2>/dev/null | wc -l)"
  [ "$left" -eq 0 ] || fail "run-cleanup left $left Jobs labelled run-id (vast's)"
  ok "run-cleanup: the detached run $run2 removed, no Job left (kubectl)"
else
  ok "run-cleanup: the detached run $run2 removed"
fi

stage="cleanup"
if [ "$reuse" -eq 0 ]; then
  vast execution cluster cleanup -x "$context"
  set_up=0
  if command -v kubectl >/dev/null 2>&1; then
    if kubectl --context "$context" get pods -A -o name 2>/dev/null | grep -q '/robovast$'; then
      fail "cleanup left the robovast pod"
    fi
  fi
  ls .robovast_cluster_config* >/dev/null 2>&1 && fail "cleanup left the saved setup"
  ok "cleanup: robovast pod and saved setup removed"
fi
stage="done"
