#!/usr/bin/env bash
# Prints N generated rules (default 100) over the city topics, a realistic mix
# of per-sensor and per-district rules, windows and aggregates, with
# thresholds that the benchmark stream never crosses (so they are evaluated on
# every sample but never fire: the cost measured is evaluation, not alerting).
set -euo pipefail
n=${1:-100}
kinds=(river rain air gas bridge traffic manhole underpass noise)
metrics=(level mm_h pm25 ch4 accel speed tilt water_depth db)
aggs=(avg max min last count)
wins=(1m 5m 10m 15m 30m)
for ((i = 0; i < n; i++)); do
  k=$((i % 9)); a=${aggs[$((i / 9 % 5))]}; w=${wins[$((i % 5))]}
  m=${metrics[$k]}
  if [ "$m" = speed ]; then cmp="<"; thr=-$((i + 1)); else cmp=">"; thr=$((100000 + i)); fi
  printf 'rule gen_%03d {\n  match "city/{district}/%s/{sensor}"\n' "$i" "${kinds[$k]}"
  if ((i % 4 == 3)); then
    printf '  per district\n  when count(sensors: %s(%s, %s) %s %s) >= 2\n' "$a" "$m" "$w" "$cmp" "$thr"
  else
    printf '  when %s(%s, %s) %s %s\n' "$a" "$m" "$w" "$cmp" "$thr"
  fi
  printf '  for 1m\n  severity warning\n}\n\n'
done
