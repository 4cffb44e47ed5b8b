#!/bin/bash
# vast scenario entrypoint (main container). Written for vast; behaviour compatible with
# RoboVAST's: logs to /out/logs/system.log, collects system info, sources ROS, optional Xvfb,
# PRE_COMMAND, then runs the scenario. Unlike upstream, /out is uploaded to S3 on EXIT
# whatever the outcome (early failure, scenario failure, SIGTERM at the deadline).
set -euo pipefail

# The directories are fixed in the Jobs; the overrides exist for tests.
OUT_DIR="${VAST_OUT_DIR:-/out}"
CONFIG_DIR="${VAST_CONFIG_DIR:-/config}"
LOG_DIR="$OUT_DIR/logs"
LOG_FILE="$LOG_DIR/system.log"
mkdir -p "$LOG_DIR"

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) [vast] $*" | tee -a "$LOG_FILE" >&2; }

# @@INIT_BLOCK@@

# @@UPLOAD_BLOCK@@

log "running as uid=$(id -u) gid=$(id -g)"

INSTANCE_TYPE=""
python3 "$CONFIG_DIR/collect_sysinfo.py" --output "$OUT_DIR/sysinfo.yaml" \
  --fact "instance_type=${INSTANCE_TYPE}" \
  --fact "available_cpus=${AVAILABLE_CPUS:-}" \
  --fact "available_mem=${AVAILABLE_MEM:-}" >>"$LOG_FILE" 2>&1 \
  || log "warning: collecting system information failed (continuing)"

set +u
if [ -n "${ROS_DISTRO:-}" ] && [ -f "/opt/ros/$ROS_DISTRO/setup.bash" ]; then
  source "/opt/ros/$ROS_DISTRO/setup.bash"
fi
if [ -f /ws/install/setup.bash ]; then
  source /ws/install/setup.bash
fi
set -u

if [ "${ENABLE_X11:-true}" != "false" ]; then
  export DISPLAY="${DISPLAY:-:0}"
  DISPLAY_NUM="${DISPLAY#:}"
  DISPLAY_NUM="${DISPLAY_NUM%%.*}"
  log "starting Xvfb on $DISPLAY (${SIZEW:-1920}x${SIZEH:-1080}x${CDEPTH:-24}, dpi ${DPI:-96})"
  Xvfb "$DISPLAY" -screen 0 "${SIZEW:-1920}x${SIZEH:-1080}x${CDEPTH:-24}" -dpi "${DPI:-96}" \
    -nolisten tcp >>"$LOG_FILE" 2>&1 &
  for _ in $(seq 1 50); do
    [ -S "/tmp/.X11-unix/X${DISPLAY_NUM}" ] && break
    sleep 0.1
  done
  [ -S "/tmp/.X11-unix/X${DISPLAY_NUM}" ] || log "warning: Xvfb socket did not appear"
  if [ "${NOVNC_ENABLE:-false}" = "true" ] && command -v x11vnc >/dev/null 2>&1; then
    x11vnc -display "$DISPLAY" -forever -shared -nopw >>"$LOG_FILE" 2>&1 &
  fi
  if [ "${WINDOW_MANAGER_ENABLE:-false}" = "true" ] && command -v openbox >/dev/null 2>&1; then
    openbox >>"$LOG_FILE" 2>&1 &
  fi
fi

# Everything from here on also goes to the log file.
exec > >(tee -a "$LOG_FILE") 2>&1

if [ -n "${PRE_COMMAND:-}" ]; then
  if [ ! -f "$PRE_COMMAND" ]; then
    log "error: PRE_COMMAND '$PRE_COMMAND' does not exist"
    exit 1
  fi
  log "sourcing PRE_COMMAND $PRE_COMMAND"
  set +u
  source "$PRE_COMMAND"
  set -u
fi

POST_RUN_ARGS=()
if [ -n "${POST_COMMAND:-}" ]; then
  if [ ! -f "$POST_COMMAND" ]; then
    log "error: POST_COMMAND '$POST_COMMAND' does not exist"
    exit 1
  fi
  cat >/tmp/vast_post_run.sh <<POST
#!/bin/bash
source "$POST_COMMAND"
POST
  chmod +x /tmp/vast_post_run.sh
  POST_RUN_ARGS=(--post-run /tmp/vast_post_run.sh)
fi

PARAM_ARGS=()
if [ -f "$CONFIG_DIR/scenario.config" ]; then
  PARAM_ARGS=(--scenario-parameter-file "$CONFIG_DIR/scenario.config")
fi

log "running scenario $CONFIG_DIR/scenario.osc"
# shellcheck disable=SC2086
ros2 run scenario_execution_ros scenario_execution_ros -o "$OUT_DIR" "$CONFIG_DIR/scenario.osc" \
  "${POST_RUN_ARGS[@]}" "${PARAM_ARGS[@]}" ${SCENARIO_EXECUTION_PARAMETERS:-}
