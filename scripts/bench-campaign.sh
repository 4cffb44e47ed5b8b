#!/usr/bin/env bash
# Benchmark of an unattended campaign on the simulated cluster: `vast execution cluster run
# -r RUNS --follow --download -o DIR` of benches/run-jobs (100 configurations × RUNS runs,
# 10,000 by default) with a fraction of the scenario pods preempted once, as GKE spot nodes
# do (`VAST_SIM_FAULTS` `preempt`).
#
# Measured: wall time and peak RSS of the whole vast process (/usr/bin/time), the runs'
# verdicts from the run's record, the runs vast re-submitted, and from the sim (`/sim/stats`)
# the pods it preempted and the pods the job controller created: with the pod failure policy
# every preempted pod is replaced exactly once, so `replaced` (pods created − Jobs) must equal
# `preempted`. Ends with one machine-readable `RESULT` line.
#
# Environment:
#   RUNS=100 PREEMPT=0.1  runs per configuration (JOBS = 100 × RUNS) and preempted fraction
#   NODES=8 NODE_CPU=16 NODE_MEMORY=64Gi JOB_DURATION_MS=200
#   VAST=, VAST_SIM=      prebuilt binaries (default: cargo build --release into
#                         ${CARGO_TARGET_DIR:-<repo>/target})
#   DOWNLOAD=0            follow only (no download): separates the two phases' cost
#   KEEP=1                keep the work directory
# Needs: cargo (unless VAST/VAST_SIM), python3, /usr/bin/time (GNU).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${RUNS:-100}"
PREEMPT="${PREEMPT:-0.1}"
NODES="${NODES:-8}"
NODE_CPU="${NODE_CPU:-16}"
NODE_MEMORY="${NODE_MEMORY:-64Gi}"
JOB_DURATION_MS="${JOB_DURATION_MS:-200}"
JOBS=$((100 * RUNS))

if [ -n "${VAST:-}" ] && [ -n "${VAST_SIM:-}" ]; then
  vast="$VAST"
  sim="$VAST_SIM"
else
  target="${CARGO_TARGET_DIR:-$repo/target}"
  echo "== building vast and vast-sim (release, into $target)"
  (cd "$repo" && cargo build --release --bin vast && cargo build --release -p vast-sim --bin vast-sim)
  vast="$target/release/vast"
  sim="$target/release/vast-sim"
fi
for b in "$vast" "$sim" /usr/bin/time; do
  [ -x "$b" ] || { echo "not executable: $b" >&2; exit 2; }
done
vast="$(cd "$(dirname "$vast")" && pwd)/$(basename "$vast")"
sim="$(cd "$(dirname "$sim")" && pwd)/$(basename "$sim")"

work="$(mktemp -d -t vast-bench-campaign.XXXXXX)"
sim_pid=""
cleanup() {
  if [ -n "$sim_pid" ]; then kill -TERM "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
  if [ -n "${KEEP:-}" ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== ${JOBS} runs, ${PREEMPT} of the scenario pods preempted once; sim: ${NODES} nodes × ${NODE_CPU} cpu, pods run ${JOB_DURATION_MS} ms"
# A real API server keeps about 5 minutes of events (etcd compaction) for watches and list
# continue tokens; the sim counts events instead. 10,000 churning Jobs make ~100,000 events in
# that time; 30,000 is enough for a paged list of 10,000 Jobs to finish (the default 10,000
# can expire one mid-way) without holding the sim's memory to 100,000 events.
printf 'watch_history: 30000\n' >"$work/sim.yaml"
VAST_SIM_FAULTS="{\"seed\":1,\"preempt\":{\"fraction\":${PREEMPT}}}" \
  "$sim" serve --config "$work/sim.yaml" --kubeconfig "$work/kubeconfig" --nodes "$NODES" --node-cpu "$NODE_CPU" \
  --node-memory "$NODE_MEMORY" --job-duration-ms "$JOB_DURATION_MS" \
  --data-dir "$work/sim-data" >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 200); do [ -s "$work/kubeconfig" ] && break; sleep 0.05; done
[ -s "$work/kubeconfig" ] || { echo "vast-sim did not start:" >&2; cat "$work/sim.log" >&2; exit 1; }
export KUBECONFIG="$work/kubeconfig"
server="$(sed -n 's/^ *server: *//p' "$work/kubeconfig" | head -1)"

cp -r "$repo/benches/run-jobs" "$work/project"
cp -r "$repo/examples/growth_sim/files" "$work/project/files"
cd "$work/project"
"$vast" -q init run-jobs.vast >/dev/null
"$vast" -q execution cluster setup rke2 >"$work/setup.log" 2>&1 || { cat "$work/setup.log" >&2; exit 1; }

extra=(--download -o "$work/results")
[ "${DOWNLOAD:-1}" = 0 ] && extra=()
echo "== vast execution cluster run -r $RUNS --follow ${extra[*]:-}"
if ! /usr/bin/time -f '%e %M %U %S' -o "$work/campaign.time" "$vast" execution cluster run \
  -r "$RUNS" --follow "${extra[@]}" >"$work/campaign.out" 2>"$work/campaign.err"; then
  tail -20 "$work/campaign.err" >&2
  exit 1
fi
read -r wall kib user sys <"$work/campaign.time"
run_id="$(sed -n 's/^run \(run-[^ ]*\) started.*/\1/p' "$work/campaign.err" | head -1)"
stats="$(python3 - "$server" <<'PY'
import json, sys, urllib.request
print(json.dumps(json.load(urllib.request.urlopen(sys.argv[1] + "/sim/stats"))))
PY
)"
python3 - "$work/project/.vast-state/work/$run_id/record.json" "$work/results" "$stats" "$JOBS" \
  "$wall" "$kib" "$user" "$sys" <<'PY'
import json, os, sys
rec = json.load(open(sys.argv[1]))
results, stats, jobs = sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
wall, kib, user, sys_s = float(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
def latest(b):
    k = rec.get("attempts", {}).get(b, 1)
    return b if k == 1 else f"{b}-a{k}"
outcomes = [rec["finished"].get(latest(b), {}).get("outcome", "open") for b in rec["jobs"]]
count = {o: outcomes.count(o) for o in ("succeeded", "failed", "lost", "open")}
resubmitted = sum(k - 1 for k in rec.get("attempts", {}).values())
dirs = 0
for root, ds, fs in os.walk(results):
    depth = os.path.relpath(root, results).count(os.sep)
    parts = os.path.relpath(root, results).split(os.sep)
    if depth == 2 and fs + ds and parts[-1].isdigit() and not parts[1].startswith("_"):
        dirs += 1
preempted = stats.get("preempted", 0)
replaced = stats.get("pods_created_by_jobs", 0) - jobs - resubmitted
print(f"   runs: {len(rec['jobs'])} ({count['succeeded']} succeeded, {count['failed']} failed, {count['lost']} lost, {count['open']} without verdict)")
print(f"   result directories downloaded: {dirs}")
print(f"   preempted pods (sim): {preempted}; pods replaced by the Job controller: {replaced}; runs re-submitted by vast: {resubmitted}")
print(f"   vast: wall {wall:.1f} s, CPU {user + sys_s:.1f} s, peak RSS {kib / 1024:.0f} MiB")
print(f"RESULT jobs={jobs} wall_s={wall:.1f} cpu_s={user + sys_s:.1f} rss_mib={kib / 1024:.0f} "
      f"succeeded={count['succeeded']} failed={count['failed']} lost={count['lost']} downloaded={dirs} "
      f"preempted={preempted} replaced={replaced} resubmitted={resubmitted}")
ok = count["succeeded"] == jobs and (dirs == jobs or not os.path.isdir(results)) and replaced == preempted
sys.exit(0 if ok else 1)
PY
