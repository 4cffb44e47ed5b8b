#!/bin/bash
# vast secondary-container entrypoint: serves scenario actions on /ipc/$CONTAINER_NAME.
set -euo pipefail
: "${CONTAINER_NAME:?CONTAINER_NAME must be set}"
LOG_DIR=/out/logs
mkdir -p "$LOG_DIR"
LOG_FILE="$LOG_DIR/system_${CONTAINER_NAME}.log"
exec > >(tee -a "$LOG_FILE") 2>&1

# @@INIT_BLOCK@@

echo "[vast] secondary container '$CONTAINER_NAME' as uid=$(id -u) gid=$(id -g)"
set +u
if [ -n "${ROS_DISTRO:-}" ] && [ -f "/opt/ros/$ROS_DISTRO/setup.bash" ]; then
  source "/opt/ros/$ROS_DISTRO/setup.bash"
fi
if [ -f /ws/install/setup.bash ]; then
  source /ws/install/setup.bash
fi
set -u
exec ros2 run scenario_execution_server_ros scenario_execution_server_ros \
  --watchdog 3 --connect-timeout 15 --socket "/ipc/${CONTAINER_NAME}"
