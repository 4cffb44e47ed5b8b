#!/bin/bash
# grow.sh RATE START: ten steps of discrete exponential growth, one CSV line per step.
set -eu
rate="$1"; pop="$2"
echo "step,population" > /out/growth/population.csv
for step in $(seq 0 9); do
  echo "$step,$pop" >> /out/growth/population.csv
  pop=$(awk -v p="$pop" -v r="$rate" 'BEGIN { printf "%.2f", p * (1 + r) }')
done
