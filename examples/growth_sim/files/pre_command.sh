#!/bin/bash
# Sourced by the entrypoint before the scenario starts.
echo "[growth_sim] pre-command: TEST_ID=${TEST_ID:-unset}"
mkdir -p /out/growth
