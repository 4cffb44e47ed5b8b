#!/usr/bin/env bash
# Benchmark of `vast execution cluster download` against the simulated cluster
# (benches/download.rs, one process: an in-process vast-sim, the real `vast` binary built in
# the bench profile). A run's results of SIZE_MIB MiB (one object of incompressible bytes) are
# archived in the pod (archive.py: pigz when on PATH, else python's gzip), then downloaded
# through the port-forward and compared with a direct S3 GET of the same bytes; peak RSS at
# SIZE_MIB and SMALL_MIB; bytes re-sent per port-forward drop and after a SIGKILL +
# `vast resume`. Prints a table with every number and its target.
#
# Environment:
#   SIZE_MIB=1024        size of the big run's results
#   SMALL_MIB=SIZE_MIB/4 size of the second run (peak RSS must not depend on the size)
#   DROP_MIB=64          the sim drops every HTTP port-forward stream after this many MiB
#   KILL_PCT=50          the download is SIGKILLed at this share of the transfer
#   KEEP=1               keep the work directory (sim data, logs of every vast command)
#   CARGO_TARGET_DIR     as usual (default <repo>/target)
# Needs: cargo, python3 (the pod's archiver), about 7 × SIZE_MIB of free disk in $TMPDIR.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export SIZE_MIB="${SIZE_MIB:-1024}"
export SMALL_MIB="${SMALL_MIB:-$((SIZE_MIB / 4 > 0 ? SIZE_MIB / 4 : 1))}"
export DROP_MIB="${DROP_MIB:-64}"
export KILL_PCT="${KILL_PCT:-50}"
command -v python3 >/dev/null || { echo "python3 is not on PATH (the pod's archiver needs it)" >&2; exit 2; }
cd "$repo"
exec cargo bench --quiet --bench download
