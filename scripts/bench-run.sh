#!/usr/bin/env bash
# Benchmark of `vast execution cluster run` (detached) against the simulated cluster, side by
# side with the baseline a user has today: `kubectl create -f all-jobs.yaml` of the same
# prepare-run output. The project is benches/run-jobs (100 configurations × RUNS runs, 10,000
# Jobs by default). Each tool gets its own fresh vast-sim with the same nodes, the same
# `vast execution cluster setup rke2` (robovast pod, S3 Secret, Kueue queues with the quota
# computed from the nodes) and Jobs with the same resource requests.
#
# Measured: wall time and peak RSS of the whole `vast execution cluster run` process and of the
# `kubectl create` process (/usr/bin/time), the duration of the run's `create-job` map step
# alone (from `vast runs events --json`), and the number of Jobs each created (counted through
# the API afterwards; must be exactly JOBS). The last line of the output is machine-readable:
#   RESULT jobs=N vast_wall_s=… vast_cpu_s=… vast_rss_mib=… kubectl_wall_s=… kubectl_cpu_s=…
#          speedup_wall=… speedup_cpu=… sim_rss_mib=…
# (the kubectl and speed-up fields are absent with SKIP_KUBECTL=1; sim_rss_mib is the peak RSS
# of the sim vast ran against).
#
# Environment:
#   RUNS=100             runs per configuration (JOBS = 100 × RUNS; RUNS=10 is a 1,000-Job smoke run)
#   VAST=, VAST_SIM=     prebuilt binaries (default: cargo build --release into
#                        ${CARGO_TARGET_DIR:-<repo>/target} and use those)
#   NODES=4 NODE_CPU=16 NODE_MEMORY=64Gi
#                        the sim's nodes (the Kueue quota follows them; every admitted Job's pod
#                        fits, so scheduling is never the bottleneck)
#   JOB_DURATION_MS=600000  pods run that long: no Job finishes (and frees quota or gets
#                        TTL-deleted) while Jobs are being created and counted
#   SKIP_KUBECTL=1       measure vast only
#   KEEP=1               keep the work directory (logs, run state, prepare-run output)
# Needs: cargo (unless VAST/VAST_SIM), kubectl, python3, /usr/bin/time (GNU).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${RUNS:-100}"
NODES="${NODES:-4}"
NODE_CPU="${NODE_CPU:-16}"
NODE_MEMORY="${NODE_MEMORY:-64Gi}"
JOB_DURATION_MS="${JOB_DURATION_MS:-600000}"
CONFIGS=100
JOBS=$((CONFIGS * RUNS))

if [ -n "${VAST:-}" ] && [ -n "${VAST_SIM:-}" ]; then
  vast="$VAST"
  sim="$VAST_SIM"
else
  target="${CARGO_TARGET_DIR:-$repo/target}"
  echo "== building vast and vast-sim (release, into $target)"
  (cd "$repo" && cargo build --quiet --release --bin vast && cargo build --quiet --release -p vast-sim --bin vast-sim)
  vast="${VAST:-$target/release/vast}"
  sim="${VAST_SIM:-$target/release/vast-sim}"
fi
for b in "$vast" "$sim" /usr/bin/time; do
  [ -x "$b" ] || { echo "not executable: $b" >&2; exit 2; }
done
command -v kubectl >/dev/null || { echo "kubectl is not on PATH" >&2; exit 2; }
vast="$(cd "$(dirname "$vast")" && pwd)/$(basename "$vast")"
sim="$(cd "$(dirname "$sim")" && pwd)/$(basename "$sim")"

work="$(mktemp -d -t vast-bench-run.XXXXXX)"
sim_pid=""
stop_sim() {
  if [ -n "$sim_pid" ]; then
    kill -TERM "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
    sim_pid=""
  fi
}
cleanup() {
  stop_sim
  if [ -n "${KEEP:-}" ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_sim DIR: a fresh vast-sim with its kubeconfig at DIR/kubeconfig, KUBECONFIG exported.
start_sim() {
  local dir="$1"
  mkdir -p "$dir"
  "$sim" serve --kubeconfig "$dir/kubeconfig" --nodes "$NODES" --node-cpu "$NODE_CPU" \
    --node-memory "$NODE_MEMORY" --job-duration-ms "$JOB_DURATION_MS" \
    --data-dir "$dir/sim-data" >"$dir/sim.log" 2>&1 &
  sim_pid=$!
  for _ in $(seq 1 200); do [ -s "$dir/kubeconfig" ] && break; sleep 0.05; done
  [ -s "$dir/kubeconfig" ] || { echo "vast-sim did not start:" >&2; cat "$dir/sim.log" >&2; exit 1; }
  export KUBECONFIG="$dir/kubeconfig"
  kubectl get --raw /readyz >/dev/null
}

# sim_rss: peak RSS of the running sim in MiB (VmHWM).
sim_rss() {
  awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$sim_pid/status"
}

# sim_cpu: CPU seconds (user + system) the running sim has used so far.
sim_cpu() {
  python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$sim_pid"
}

# project DIR: the bench project copied to DIR/project, initialised, the cluster set up; cd there.
project() {
  cp -r "$repo/benches/run-jobs" "$1/project"
  # the test files are the example's (one copy in the repo)
  cp -r "$repo/examples/growth_sim/files" "$1/project/files"
  cd "$1/project"
  "$vast" -q init run-jobs.vast >/dev/null
  "$vast" -q execution cluster setup rke2 >"$1/setup.log" 2>&1 || { cat "$1/setup.log" >&2; exit 1; }
}

# count_jobs RUN_ID: Jobs labelled with the run id, through the API, in one unpaged list (the
# sim expires continue tokens once 10,000 newer events exist, and its controllers are still
# creating the Jobs' Workloads right after the creates).
count_jobs() {
  kubectl get jobs -l "run-id=$1" -o name --chunk-size=0 | wc -l | tr -d ' '
}

# timed OUT CMD...: /usr/bin/time's "wall_s peak_rss_KiB user_s sys_s" into OUT.
timed() {
  local out="$1"
  shift
  /usr/bin/time -f '%e %M %U %S' -o "$out" "$@"
}

echo "== ${CONFIGS} configurations × ${RUNS} runs = ${JOBS} Jobs; sim: ${NODES} nodes × ${NODE_CPU} cpu / ${NODE_MEMORY}, job duration ${JOB_DURATION_MS} ms"
echo "   vast:    $vast"
echo "   vast-sim: $sim"
echo "   kubectl: $(kubectl version --client 2>/dev/null | head -1)"
echo "   load average at start: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"

# ---- vast execution cluster run (detached) -------------------------------------------------
echo "== vast: fresh sim, vast init, vast execution cluster setup rke2"
start_sim "$work/vast"
project "$work/vast"
echo "== vast execution cluster run -r $RUNS (detached: returns once every Job is created)"
sim_cpu0="$(sim_cpu)"
if ! timed "$work/vast/run.time" "$vast" execution cluster run -r "$RUNS" \
  >"$work/vast/run.out" 2>"$work/vast/run.err"; then
  cat "$work/vast/run.out" "$work/vast/run.err" >&2
  exit 1
fi
run_id="$(sed -n 's/^✓ Jobs created successfully (Run ID: \(.*\))$/\1/p' "$work/vast/run.out")"
[ -n "$run_id" ] || { echo "no run id in vast's output:" >&2; cat "$work/vast/run.out" >&2; exit 1; }
read -r vast_wall vast_kib vast_user vast_sys <"$work/vast/run.time"
vast_sim_cpu="$(python3 -c "print($(sim_cpu) - $sim_cpu0)")"
vast_jobs="$(count_jobs "$(echo "$run_id" | tr 'A-Z_' 'a-z-')")"
vast_sim_rss="$(sim_rss)"
"$vast" runs events "$run_id" --json >"$work/vast/events.json"
"$vast" runs show "$run_id" --json >"$work/vast/show.json"
# Step timings from the journal: first and last event of each step (a map step's children
# count toward it: `create-job` is the whole map, from the first child started to the last
# child done).
python3 - "$work/vast/events.json" >"$work/vast/steps.txt" <<'PY'
import json, sys
from datetime import datetime
ev = json.load(open(sys.argv[1]))
t = lambda e: datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()
first, last = {}, {}
for e in ev:
    s = e.get("step")
    if not s:
        continue
    base = s.split("[")[0].split("/")[0].split("#")[0]
    first[base] = min(first.get(base, t(e)), t(e))
    last[base] = max(last.get(base, t(e)), t(e))
run0 = min(t(e) for e in ev)
run1 = max(t(e) for e in ev)
print(f"run {run1 - run0:.3f}")
for s in sorted(first, key=first.get):
    print(f"{s} {last[s] - first[s]:.3f} {first[s] - run0:.3f}")
PY
create_s="$(awk '$1 == "create-job" {print $2}' "$work/vast/steps.txt")"
echo "   run id $run_id: ${vast_jobs} Jobs, wall ${vast_wall} s, peak RSS $((vast_kib / 1024)) MiB"
echo "   step durations from the journal (step, seconds, start offset s):"
sed 's/^/     /' "$work/vast/steps.txt"
stop_sim

# ---- baseline: kubectl create -f all-jobs.yaml ---------------------------------------------
if [ -z "${SKIP_KUBECTL:-}" ]; then
  echo "== kubectl: fresh sim, vast init, vast execution cluster setup rke2"
  start_sim "$work/kubectl"
  project "$work/kubectl"
  echo "== vast execution cluster prepare-run out -k rke2 -r $RUNS"
  timed "$work/kubectl/prepare.time" "$vast" -q execution cluster prepare-run out -k rke2 -r "$RUNS" \
    >"$work/kubectl/prepare.log" 2>&1 || { cat "$work/kubectl/prepare.log" >&2; exit 1; }
  read -r prep_wall prep_kib _ _ <"$work/kubectl/prepare.time"
  k_run_id="$(sed -n 's/^# vast run //p' out/README.md)"
  # Not timed: the configurations to the run's bucket (upload_configs.py on a real cluster),
  # so the admitted Jobs' pods start and run as vast's do instead of failing their init
  # container and freeing quota for the next ones (churn only the baseline would pay for).
  "$vast" -q execution cluster upload-configs out >"$work/kubectl/upload.log" 2>&1 ||
    { cat "$work/kubectl/upload.log" >&2; exit 1; }
  echo "   prepare-run: $(ls out/jobs | wc -l) Job manifests, $(du -m out/all-jobs.yaml | cut -f1) MiB all-jobs.yaml, ${prep_wall} s, peak RSS $((prep_kib / 1024)) MiB"
  echo "== kubectl create -f out/all-jobs.yaml"
  sim_cpu0="$(sim_cpu)"
  if ! timed "$work/kubectl/create.time" kubectl create -f out/all-jobs.yaml \
    >"$work/kubectl/create.out" 2>"$work/kubectl/create.err"; then
    tail -5 "$work/kubectl/create.err" >&2
    exit 1
  fi
  read -r k_wall k_kib k_user k_sys <"$work/kubectl/create.time"
  k_sim_cpu="$(python3 -c "print($(sim_cpu) - $sim_cpu0)")"
  k_jobs="$(count_jobs "$k_run_id")"
  k_sim_rss="$(sim_rss)"
  echo "   run id $k_run_id: ${k_jobs} Jobs, wall ${k_wall} s, peak RSS $((k_kib / 1024)) MiB"
  stop_sim
fi

# ---- the table -----------------------------------------------------------------------------
python3 - <<PY
jobs = $JOBS
rows = [("vast execution cluster run", int("$vast_jobs"), float("$vast_wall"), int("$vast_kib"),
         float("$vast_user") + float("$vast_sys"), float("$vast_sim_cpu"), int("$vast_sim_rss"))]
create = "$create_s"
if "${SKIP_KUBECTL:-}" == "":
    rows.append(("kubectl create -f all-jobs.yaml", int("${k_jobs:-0}"), float("${k_wall:-0}"),
                 int("${k_kib:-0}"), float("${k_user:-0}") + float("${k_sys:-0}"), float("${k_sim_cpu:-0}"),
                 int("${k_sim_rss:-0}")))
print()
print(f"{'tool':<34} {'jobs':>6} {'wall s':>8} {'jobs/s':>8} {'peak RSS MiB':>13} {'CPU s':>7} {'sim CPU s':>10} {'sim RSS MiB':>12}")
for name, n, wall, kib, cpu, scpu, srss in rows:
    print(f"{name:<34} {n:>6} {wall:>8.2f} {n / wall:>8.0f} {kib / 1024:>13.1f} {cpu:>7.2f} {scpu:>10.2f} {srss:>12}")
if create:
    c = float(create)
    print(f"{'  of which the create-job map step':<34} {rows[0][1]:>6} {c:>8.2f} {rows[0][1] / c:>8.0f}")
ok = all(r[1] == jobs for r in rows)
print()
if len(rows) == 2:
    ratio = rows[1][2] / rows[0][2]
    print(f"speed-up, whole vast process vs kubectl create: {ratio:.1f}x (target >= 10x: {'met' if ratio >= 10 else 'NOT met'})")
    if create:
        print(f"speed-up, create-job step vs kubectl create:    {rows[1][2] / float(create):.1f}x")
mib = rows[0][3] / 1024
print(f"peak RSS of vast: {mib:.1f} MiB (target <= 100 MiB: {'met' if mib <= 100 else 'NOT met'})")
print(f"Job count check ({jobs} each): {'ok' if ok else 'FAILED: ' + ', '.join(f'{r[0]}={r[1]}' for r in rows)}")
# the machine-readable summary, always the last line: vast's process, kubectl's (absent with
# SKIP_KUBECTL=1), the speed-ups (kubectl / vast) and the sim's peak RSS during vast's run
v = rows[0]
fields = [f"jobs={v[1]}", f"vast_wall_s={v[2]:.2f}", f"vast_cpu_s={v[4]:.2f}", f"vast_rss_mib={v[3] / 1024:.1f}"]
if len(rows) == 2:
    k = rows[1]
    fields += [f"kubectl_wall_s={k[2]:.2f}", f"kubectl_cpu_s={k[4]:.2f}",
               f"speedup_wall={k[2] / v[2]:.2f}", f"speedup_cpu={k[4] / max(v[4], 1e-9):.2f}"]
fields.append(f"sim_rss_mib={v[6]}")
print("RESULT " + " ".join(fields))
raise SystemExit(0 if ok else 1)
PY
