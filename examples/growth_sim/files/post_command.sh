#!/bin/bash
# Sourced after the scenario, before the results are uploaded.
echo "[growth_sim] post-command: $(ls /out | wc -l) entries in /out"
