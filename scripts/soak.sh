#!/usr/bin/env bash
# `make soak`: the simulated city at half capacity for SOAK_MINUTES (default
# 60) against the engine running etc/rules with etc/citybrain.conf, the HTTP
# API polled as a dashboard would, and the engine's resources sampled every
# 10 s. Passes when every curve is flat after the warm-up (see "flat" below).
#
# Environment:
#   SOAK_MINUTES    how long the city plays (default 60)
#   SOAK_RATE       messages/s; default: half of the capacity measured first
#                   (what the engine takes in 20 s of `citybrain sim --rate 0`,
#                   as fast as the broker and the engine allow, QoS 1)
#   SOAK_WARMUP_MINUTES  samples before this are warm-up, not judged
#                   (default: half of SOAK_MINUTES)
#   SOAK_RETENTION  storage.retention.raw for the run (default 2m), so the
#                   database reaches its plateau within the run
#   SOAK_SCENARIO   the incidents (default bench/scenarios/soak.scn: over by
#                   minute 20, none that changes how many messages arrive)
#   SOAK_DIR        where samples, plot and logs go (default build/soak)
#   CB              the binary (default build/citybrain)
#
# Writes SOAK_DIR/soak.csv (one row per 10 s sample), soak.png (the curves),
# verdict.txt (the flatness table) and the logs of the broker, engine,
# simulator and poller. Everything listens and connects on 127.0.0.1 only;
# the load is bounded by the rate and the duration, the poller by a count;
# only the processes this script started are stopped, by their PIDs.
#
# Flat: over the samples after the warm-up (by default the second half), the
# least-squares slope of a curve times that half's duration (the drift the
# line predicts across it) must not exceed the larger of REL x the curve's
# mean and an absolute floor ABS, per curve (the CURVES table below). A
# curve that is missing (the loop-lag histogram in a build without it) is
# reported as such and not judged. The warm-up must cover the longest rule
# window (30 min in etc/rules): until then the windows fill, and memory with
# them, by design. Hence the default hour; a shorter run shows the curves but
# its RSS and window samples still climb.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CB=${CB:-$ROOT/build/citybrain}
MINUTES=${SOAK_MINUTES:-60}
WARMUP_S=$(( ${SOAK_WARMUP_MINUTES:-0} > 0 ? ${SOAK_WARMUP_MINUTES:-0} * 60 : MINUTES * 30 ))
RATE=${SOAK_RATE:-}
RETENTION=${SOAK_RETENTION:-2m}
OUT=${SOAK_DIR:-$ROOT/build/soak}
INTERVAL=10
DISTRICTS=6
SENSORS=3
SCENARIO=${SOAK_SCENARIO:-bench/scenarios/soak.scn}

# ---- the curves and their flatness limits: the one place they are written ------
# column          REL    ABS        what
CURVES='
rss_kb            0.05   4096       resident memory (kB)
fds               0.05   2          open files (/proc/PID/fd)
threads           0      1          threads
window_samples    0.05   10000      samples held in rule windows (grows until the longest is full)
loop_lag_ms       0.50   5          mean loop lag over the interval (ms)
mqtt_queue        0.50   2000       messages waiting for the loop
pending_rows      0.50   20000      rows waiting for the writer
outbox            0.10   10         webhook deliveries not acknowledged
db_bytes          0.05   8388608    database file
wal_bytes         0.10   8388608    WAL file
journal_segs      0      1          ingest journal segment files (bytes: a sawtooth)
cache_kb          0.05   4096       page cache of the writer (up to storage.cache_size; in the page slab)
heap_used_kb      0.05   4096       allocated and not freed (a leak climbs here)
heap_free_kb      0.25   8192       freed but kept by malloc (fragmentation climbs here)
slab_pages        0.10   1024       pages of all page caches in the SQLite page slab (4 KB each)
slab_overflow_kb  0.25   4096       page cache memory that did not fit in the slab (malloc)
'
# ------------------------------------------------------------------------------------

mkdir -p "$OUT"
rm -f "$OUT"/soak.csv "$OUT"/soak.png "$OUT"/verdict.txt
DATA=$(mktemp -d /tmp/citybrain-soak.XXXXXX)
MOSQ="" ENGINE="" SIM="" POLLER=""

log() { echo "soak: $*" >&2; }

stop_pid() { # PID [signal]: signal one process we started and wait for it
  local pid=$1 sig=${2:-TERM}
  [ -n "$pid" ] || return 0
  kill -"$sig" "$pid" 2>/dev/null || return 0
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { log "process $pid did not stop in 15 s: killed"; kill -9 "$pid"; }
  wait "$pid" 2>/dev/null
}
cleanup() {
  stop_pid "$POLLER"
  stop_pid "$SIM" INT
  stop_pid "$ENGINE" INT
  stop_pid "$MOSQ"
  cp "$DATA"/*.log "$OUT"/ 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/broker.sh
. "$ROOT/scripts/broker.sh"

# ---- broker and engine ---------------------------------------------------------------
start_broker "$DATA"

HPORT=$(free_port)
API="http://127.0.0.1:$HPORT"
"$CB" run --config etc/citybrain.conf --broker "tcp://127.0.0.1:$BPORT" --topic 'city/#' \
  --client-id citybrain-soak --db "$DATA/citybrain.db" --rules etc/rules \
  --http "127.0.0.1:$HPORT" --set "storage.retention.raw=$RETENTION" \
  > "$DATA/engine.log" 2>&1 &
ENGINE=$!
up=0
for _ in $(seq 200); do
  kill -0 "$ENGINE" 2>/dev/null || break
  curl -s --max-time 1 "$API/api/health" > /dev/null && { up=1; break; }
  sleep 0.1
done
if [ "$up" != 1 ]; then
  log "the engine did not come up; its log:"
  tail -20 "$DATA/engine.log" >&2
  exit 1
fi

# One series of /metrics (exact name, labels included), or "" when absent.
metric() { awk -v s="$1" '$1 == s { print $2; exit }' "$DATA/metrics.txt"; }
fetch_metrics() { curl -s --max-time 5 "$API/metrics" > "$DATA/metrics.txt" || : > "$DATA/metrics.txt"; }

SIM_ARGS=(--broker "tcp://127.0.0.1:$BPORT" --districts "$DISTRICTS" --sensors "$SENSORS"
          --qos 1 --quiet)

# ---- capacity --------------------------------------------------------------------------
if [ -z "$RATE" ]; then
  log "measuring capacity: 20 s as fast as the broker and the engine take it"
  # (--rate 0 runs by a count: a bound the 20 s are far from reaching)
  "$CB" sim "${SIM_ARGS[@]}" --rate 0 --count 20000000 > "$DATA/capacity.log" 2>&1 &
  SIM=$!
  sleep 2 # connected and publishing
  fetch_metrics
  m0=$(metric citybrain_mqtt_received_total); t0=$(date +%s.%N)
  sleep 20
  fetch_metrics
  m1=$(metric citybrain_mqtt_received_total); t1=$(date +%s.%N)
  stop_pid "$SIM" INT; SIM=""
  for _ in $(seq 100); do # let the engine drain what is queued
    fetch_metrics
    [ "$(metric citybrain_mqtt_queue_depth)" = 0 ] && break
    sleep 0.2
  done
  CAPACITY=$(awk -v a="${m0:-0}" -v b="${m1:-0}" -v s="$t0" -v e="$t1" \
    'BEGIN { printf "%d", (b - a) / (e - s) }')
  RATE=$(( CAPACITY / 2 ))
  log "capacity ${CAPACITY} msg/s (QoS 1, storage and etc/rules on): soak at ${RATE} msg/s"
  RATE_SOURCE="half the measured capacity of ${CAPACITY} msg/s"
else
  RATE_SOURCE="SOAK_RATE"
fi
[ "${RATE:-0}" -gt 0 ] || { log "no rate (capacity measurement failed?)"; exit 1; }

# ---- the city and the dashboard -------------------------------------------------------
"$CB" sim "${SIM_ARGS[@]}" --rate "$RATE" --duration "${MINUTES}m" --scenario "$SCENARIO" \
  > "$DATA/sim.log" 2>&1 &
SIM=$!

# A dashboard: every 0.5 s the alerts, the sensors list, one series and the
# health, on one keep-alive connection; bounded by a count as well as by the run.
(
  for _ in $(seq $(( MINUTES * 120 + 120 ))); do
    curl -s --max-time 5 -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
      -w '%{http_code}\n' "$API/api/alerts" "$API/api/sensors" \
      "$API/api/series?topic=city/d01/river/s01&metric=level" "$API/api/health"
    sleep 0.5
  done
) > "$DATA/poller.log" 2>&1 &
POLLER=$!

# ---- sampling ---------------------------------------------------------------------------
echo "t_s,rss_kb,fds,threads,window_samples,loop_lag_ms,mqtt_queue,pending_rows,outbox,db_bytes,wal_bytes,journal_bytes,journal_segs,msgs_per_s,dropped,health,cache_kb,heap_used_kb,heap_free_kb,heap_trim_ms,slab_pages,slab_overflow_kb" \
  > "$OUT/soak.csv"
size_of() { stat -c %s "$1" 2>/dev/null || echo 0; }
start=$(date +%s)
prev_msgs="" prev_t="" prev_lag_sum="" prev_lag_n=""
log "sampling every ${INTERVAL}s for ${MINUTES} min (engine $ENGINE, broker $MOSQ, simulator $SIM)"
next=$start
while kill -0 "$SIM" 2>/dev/null; do
  next=$(( next + INTERVAL ))
  sleep $(( next - $(date +%s) > 0 ? next - $(date +%s) : 0 ))
  kill -0 "$SIM" 2>/dev/null || break # the city stopped: the run is over
  kill -0 "$ENGINE" 2>/dev/null || { log "the engine exited"; tail -20 "$DATA/engine.log" >&2; exit 1; }
  now=$(date +%s.%N)
  fetch_metrics
  health=$(curl -s --max-time 5 "$API/api/health" | sed -n 's/^{"status":"\([a-z]*\)".*/\1/p')
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$ENGINE/status")
  threads=$(awk '/^Threads:/ { print $2 }' "/proc/$ENGINE/status")
  fds=$(ls "/proc/$ENGINE/fd" | wc -l)
  msgs=$(metric citybrain_mqtt_received_total)
  lag_sum=$(metric citybrain_loop_lag_seconds_sum)
  lag_n=$(metric citybrain_loop_lag_seconds_count)
  rate="" lag=""
  if [ -z "$msgs" ]; then
    : # /metrics did not answer in 5 s: the row has gaps, the rate waits for the next one
  elif [ -n "$prev_t" ]; then
    rate=$(awk -v a="$prev_msgs" -v b="${msgs:-0}" -v s="$prev_t" -v e="$now" \
      'BEGIN { printf "%.0f", (b - a) / (e - s) }')
    if [ -n "$lag_n" ] && [ -n "$prev_lag_n" ]; then
      lag=$(awk -v s0="$prev_lag_sum" -v s1="$lag_sum" -v n0="$prev_lag_n" -v n1="$lag_n" \
        'BEGIN { printf "%.3f", (n1 > n0 ? (s1 - s0) / (n1 - n0) * 1000 : 0) }')
    fi
  fi
  [ -n "$msgs" ] && { prev_msgs=$msgs prev_t=$now prev_lag_sum=$lag_sum prev_lag_n=$lag_n; }
  journal=$(du -sb "$DATA/citybrain.db.journal" 2>/dev/null | cut -f1)
  segs=$(ls "$DATA/citybrain.db.journal" 2>/dev/null | grep -c '\.seg$')
  kb() { [ -n "$1" ] && awk -v b="$1" 'BEGIN { printf "%d", b / 1024 }'; }
  printf '%d,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' $(( $(date +%s) - start )) \
    "$rss" "$fds" "$threads" "$(metric citybrain_rules_window_samples)" "$lag" "$(metric citybrain_mqtt_queue_depth)" \
    "$(metric citybrain_storage_pending_rows)" "$(metric citybrain_notify_outbox_depth)" \
    "$(size_of "$DATA/citybrain.db")" "$(size_of "$DATA/citybrain.db-wal")" "${journal:-0}" "$segs" \
    "$rate" "$(metric citybrain_mqtt_dropped_total)" "${health:-none}" \
    "$(kb "$(metric citybrain_storage_cache_bytes)")" "$(kb "$(metric citybrain_heap_in_use_bytes)")" \
    "$(kb "$(metric citybrain_heap_free_bytes)")" \
    "$(awk -v s="$(metric citybrain_heap_trim_seconds)" 'BEGIN { if (s != "") printf "%.3f", s * 1000 }')" \
    "$(metric citybrain_sqlite_page_slab_used_pages)" "$(kb "$(metric citybrain_sqlite_page_overflow_bytes)")" \
    >> "$OUT/soak.csv"
done
wait "$SIM"; SIM=""
stop_pid "$POLLER"; POLLER=""
log "the city stopped; $(grep -c '^200$' "$DATA/poller.log") API answers 200, $(grep -vc '^200$' "$DATA/poller.log") other"

# ---- verdict ------------------------------------------------------------------------------
samples=$(( $(wc -l < "$OUT/soak.csv") - 1 ))
{
  echo "soak: ${MINUTES} min at ${RATE} msg/s (${RATE_SOURCE}), ${samples} samples every ${INTERVAL}s;"
  echo "flat = least-squares drift over the samples after ${WARMUP_S}s of warm-up <= max(REL x mean, ABS)"
  awk -F, -v curves="$CURVES" -v warmup="$WARMUP_S" '
    BEGIN {
      n = split(curves, lines, "\n")
      for (i = 1; i <= n; i++) if (split(lines[i], f, " ") >= 3) { rel[f[1]] = f[2]; abs[f[1]] = f[3]; order[++nc] = f[1] }
    }
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    { rows++; for (i = 1; i <= NF; i++) v[rows, i] = $i }
    END {
      printf "%-14s %14s %14s %14s %8s\n", "curve", "mean", "drift", "limit", "verdict"
      bad = 0
      for (k = 1; k <= nc; k++) {
        c = order[k]; j = col[c]; sx = sy = sxx = sxy = m = 0
        for (r = 1; r <= rows; r++) {
          if (v[r, 1] < warmup || v[r, j] == "") continue
          x = v[r, 1]; y = v[r, j]; m++; sx += x; sy += y; sxx += x * x; sxy += x * y
          if (m == 1) x0 = x; x1 = x
        }
        if (m < 3) { printf "%-14s %14s %14s %14s %8s\n", c, "-", "-", "-", "absent"; continue }
        d = m * sxx - sx * sx
        slope = d > 0 ? (m * sxy - sx * sy) / d : 0
        mean = sy / m; drift = slope * (x1 - x0)
        limit = rel[c] * (mean < 0 ? -mean : mean); if (limit < abs[c]) limit = abs[c]
        ok = (drift < 0 ? -drift : drift) <= limit
        if (!ok) bad = 1
        printf "%-14s %14.1f %14.1f %14.1f %8s\n", c, mean, drift, limit, ok ? "flat" : "SLOPE"
      }
      exit bad
    }' "$OUT/soak.csv"
} > "$OUT/verdict.txt"
verdict=$?
cat "$OUT/verdict.txt"

# ---- plot ----------------------------------------------------------------------------------
if awk -F, 'NR > 1 && $6 != "" { found = 1 } END { exit !found }' "$OUT/soak.csv"; then
  LAG_PLOT="plot \"$OUT/soak.csv\" using 1:6 with lines title \"loop lag (ms, mean)\""
else
  LAG_PLOT='unset border; unset tics; set label 1 "loop lag: no citybrain_loop_lag_seconds in /metrics" at graph 0.5,0.5 center
plot [0:1] [0:1] 2 notitle
unset label 1; set border; set tics'
fi
if command -v gnuplot > /dev/null; then
  gnuplot <<EOF 2> "$OUT/gnuplot.log" || log "gnuplot failed: see $OUT/gnuplot.log"
set terminal pngcairo size 1400,1300 font ",9" noenhanced
set yrange [0:*]
set output "$OUT/soak.png"
set datafile separator ","
set key autotitle columnhead top left
set multiplot layout 4,3 title "citybrain soak: ${MINUTES} min at ${RATE} msg/s (warm-up: the first ${WARMUP_S} s)"
set xlabel "s"
plot "$OUT/soak.csv" using 1:(\$2/1024) with lines title "RSS (MB)"
plot "$OUT/soak.csv" using 1:3 with lines title "open files", "" using 1:4 with lines title "threads"
plot "$OUT/soak.csv" using 1:5 with lines title "samples in rule windows"
$LAG_PLOT
plot "$OUT/soak.csv" using 1:7 with lines title "MQTT queue (messages)"
plot "$OUT/soak.csv" using 1:8 with lines title "pending rows"
plot "$OUT/soak.csv" using 1:9 with lines title "outbox"
plot "$OUT/soak.csv" using 1:(\$10/1048576) with lines title "DB (MB)", "" using 1:(\$11/1048576) with lines title "WAL (MB)"
plot "$OUT/soak.csv" using 1:(\$12/1048576) with lines title "journal (MB)", "" using 1:(\$13*10) with steps title "journal segments x 10"
plot "$OUT/soak.csv" using 1:14 with lines title "handled msg/s"
plot "$OUT/soak.csv" using 1:(\$17/1024) with lines title "writer page cache (MB)", "" using 1:(\$18/1024) with lines title "heap in use (MB)", "" using 1:(\$19/1024) with lines title "heap free (MB)", "" using 1:(\$21*4/1024) with lines title "page slab in use (MB, 4 KB pages)", "" using 1:(\$22/1024) with lines title "page overflow (MB)"
unset multiplot
EOF
else
  log "gnuplot is not installed (scripts/setup.sh soak installs it): no plot"
fi
log "samples $OUT/soak.csv, plot $OUT/soak.png, verdict $OUT/verdict.txt"
[ $verdict -eq 0 ] && log "PASS: every curve is flat after the warm-up" || log "FAIL: a curve still climbs"
exit $verdict
