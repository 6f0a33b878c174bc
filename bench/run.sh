#!/usr/bin/env bash
# bench/run.sh [PROGRAM...]: runs every benchmark of bench/ and prints one
# markdown table, each figure beside the baseline measured in the same run and
# their ratio, then writes it into BENCHMARKS.md. Called by `make bench`.
#
# Benchmarks owned here (all traffic on loopback, private mosquitto):
#   ingest   citybrain run (storage on) against bench/count_sub (a Paho
#            subscriber that only counts), same broker, same stream:
#            flood_pub sends N ~100-byte JSON messages over 10,080 topics as
#            fast as it can; throughput = N / (time from the publisher's
#            start to the Nth message handled). QoS 0 and QoS 1; then again
#            with etc/rules plus 100 generated rules.
#   node-red the highest rate each of citybrain and Node-RED (MQTT in, JSON,
#            switch, MQTT out) sustains without a growing backlog (rates are
#            stepped), RSS and CPU per message.
#   latency  publish-to-alert p50/p99 at 10k msg/s QoS 1.
#   apiload  GET /api/alerts (1,000 firing, gzip) and a 24-hour /api/series
#            query of a running citybrain (bench_api --port) while it ingests
#            at half the QoS 0 no-rules capacity measured above; the ingest
#            rate with and without that API load.
# PROGRAMs (other helpers' bench_*: `key value` lines) are run after and
# listed with their own figures; a missing one shows as "not run".
#
# The whole run is bounded (each step has a time limit; about 12 minutes).
#   steady   bench/steady.sh: 10,000 series with history, one sample per
#            series per second at QoS 1 for minutes: bytes written and CPU
#            per committed sample, by thread; committed samples/s.
# BENCH_ONLY="SECTION..." (of ingest, node-red, latency, apiload, steady, programs)
# runs those sections only and prints their rows without writing BENCHMARKS.md.
set -uo pipefail
PROGS=("$@")

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CB=${CB:-$ROOT/build/citybrain}
TOOLS=$ROOT/build/bench
TMP=$(mktemp -d /tmp/citybrain-bench.XXXXXX)
QUICK=${BENCH_QUICK:-0}          # 1: smaller counts (for a smoke run)
N0=${BENCH_N0:-200000}           # messages at QoS 0
N1=${BENCH_N1:-100000}           # messages at QoS 1
if [ "$QUICK" = 1 ]; then N0=20000; N1=10000; fi

log() { echo "bench: $*" >&2; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
ONLY=${BENCH_ONLY:-}
section() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
start_broker

# ---- citybrain helpers ----------------------------------------------------------
# start_cb QOS [run options...]: starts citybrain on a fresh database and waits
# until it has received a probe message (so its subscription is active).
start_cb() {
  local qos=$1; shift
  HPORT=$(free_port)
  rm -rf "$TMP/cb.db"*
  "$CB" run --broker "$BROKER" --topic 'city/#' --topic 'bench/#' --qos "$qos" \
    --client-id "bench-cb-$$" --db "$TMP/cb.db" --http "127.0.0.1:$HPORT" \
    --log-level warn --set mqtt.clean_session=true --set alerts.storm_window=0 \
    --set rules.allow_none=true "$@" > "$TMP/cb.log" 2>&1 &
  CB_PID=$!
  PIDS+=("$CB_PID")
  local i
  for i in $(seq 200); do
    kill -0 "$CB_PID" 2>/dev/null || { log "citybrain exited: $(tail -3 "$TMP/cb.log")"; CB_PID=""; return 1; }
    mosquitto_pub -p "$BPORT" -t city/probe/probe/p0 -m 1 -q 1 2>/dev/null
    if [ "$(cb_handled)" -ge 1 ] 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "citybrain did not come up: $(tail -3 "$TMP/cb.log")"
  stop_cb
  return 1
}
# Messages citybrain's loop has handled (accepted + rejected), from /metrics.
cb_handled() {
  curl -s --max-time 2 "http://127.0.0.1:$HPORT/metrics" |
    awk '/^citybrain_ingest_messages_total/ { n += $2 } END { printf "%d\n", n }'
}
# A gauge's value as printed (cb_metric sums integers).
cb_gauge() {
  curl -s --max-time 2 "http://127.0.0.1:$HPORT/metrics" | awk -v k="$1" '$1 == k { print $2; exit }'
}
# CPU seconds (user + system) of a process, from /proc/PID/stat.
cpu_of() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f\n", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null
}
rss_mb() { awk '/^VmRSS/ { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status" 2>/dev/null; }

# wait_count FN TARGET LIMIT_S: polls FN every 20 ms until it reaches TARGET;
# echoes the wall time it did (or nothing on timeout).
wait_count() {
  local fn=$1 target=$2 limit=$3 t0 c
  t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$limit" ]; do
    c=$($fn)
    if [ "${c:-0}" -ge "$target" ]; then now; return 0; fi
    sleep 0.02
  done
  return 1
}

# ---- ingest: citybrain against the count-only subscriber ---------------------------
# ingest_round LABEL QOS N [citybrain run options...]: one baseline run and one
# citybrain run, one after the other on the same broker; sets R_CB_RATE,
# R_BASE_RATE, R_CB_CPU, R_BASE_CPU (empty when a side did not finish).
ingest_round() {
  local label=$1 qos=$2 n=$3; shift 3
  local base_rate="" base_cpu="" cb_rate="" cb_cpu="" t0 t1 c0 c1 cpu0 cpu1
  # Baseline.
  rm -f "$TMP/ready"
  "$TOOLS/count_sub" --broker "$BROKER" --topic 'city/#' --qos "$qos" --count "$n" \
    --timeout 60 --idle 5 --ready "$TMP/ready" > "$TMP/base.txt" 2>&1 &
  local sub=$!
  for _ in $(seq 200); do [ -f "$TMP/ready" ] && break; sleep 0.05; done
  t0=$(now)
  "$TOOLS/flood_pub" --broker "$BROKER" --count "$n" --qos "$qos" > "$TMP/pub_base.txt"
  wait "$sub"
  if [ "$(kv "$TMP/base.txt" received)" = "$n" ]; then
    # The same span as citybrain's: from the publisher's start (t0) to the
    # Nth message, whose wall-clock time the subscriber printed.
    t1=$(kv "$TMP/base.txt" last_unix_s)
    base_rate=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { if (b > a) printf "%.0f", n / (b - a) }')
    base_cpu=$(kv "$TMP/base.txt" cpu_us_per_msg)
  fi
  # citybrain.
  if start_cb "$qos" "$@"; then
    c0=$(cb_handled)
    cpu0=$(cpu_of "$CB_PID")
    t0=$(now)
    "$TOOLS/flood_pub" --broker "$BROKER" --count "$n" --qos "$qos" > "$TMP/pub_cb.txt"
    # Nothing polls citybrain while the publisher runs (curl and awk every
    # 20 ms cost a third of a core, taken from the parties measured); then the
    # Nth message's time is citybrain's own record of its last message, as
    # count_sub prints its own.
    if wait_count cb_handled $((c0 + n)) 60 > /dev/null; then
      cpu1=$(cpu_of "$CB_PID")
      t1=$(cb_gauge citybrain_ingest_last_message_timestamp_seconds)
      cb_rate=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { if (b > a) printf "%.0f", n / (b - a) }')
      cb_cpu=$(awk -v n="$n" -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", (b - a) * 1e6 / n }')
      # Storage: when were the rows of all N messages committed?
      local rows
      rows=$(cb_metric citybrain_storage_rows_written_total)
      echo "- $label: citybrain handled $n messages; storage rows written by then: ${rows:-?}; RSS $(rss_mb "$CB_PID") MB; dropped (QoS 0 hand-off full): $(cb_metric citybrain_mqtt_dropped_total)" >> "$NOTES"
    else
      echo "- $label: citybrain handled $(( $(cb_handled) - c0 )) of $n messages within 60 s" >> "$NOTES"
    fi
    stop_cb
  fi
  R_CB_RATE=$cb_rate R_BASE_RATE=$base_rate R_CB_CPU=$cb_cpu R_BASE_CPU=$base_cpu
  log "$label: citybrain ${cb_rate:-?} msg/s, baseline ${base_rate:-?} msg/s"
}

# ingest_pair LABEL QOS N [citybrain run options...]: BENCH_ROUNDS rounds (7;
# 1 when quick), alternating on this shared machine whose speed drifts from
# second to second; the table shows the round with the median ratio, the notes
# every round's ratio and the ratio of the two sides' best rounds (the noise
# of a shared machine only ever slows a side down, so each side's fastest
# round is its least disturbed one, the estimator Python's timeit recommends).
ingest_pair() {
  local label=$1 qos=$2 n=$3; shift 3
  local rounds=${BENCH_ROUNDS:-7} i lines=""
  [ "$QUICK" = 1 ] && rounds=1
  for i in $(seq "$rounds"); do
    ingest_round "$label" "$qos" "$n" "$@"
    lines+="$(ratio "$R_CB_RATE" "$R_BASE_RATE") ${R_CB_RATE:-x} ${R_BASE_RATE:-x} ${R_CB_CPU:-x} ${R_BASE_CPU:-x}"$'\n'
  done
  # Median by ratio; a round where a side did not finish ("n/a") counts as
  # the lowest, so a failure pulls the figure down, never up.
  local pick
  pick=$(printf '%s' "$lines" | sed 's|^n/a |-1 |' | sort -g | awk -v r="$rounds" '{ a[NR] = $0 } END { print a[int((r + 1) / 2)] }')
  local cb_rate base_rate cb_cpu base_cpu
  read -r _ cb_rate base_rate cb_cpu base_cpu <<< "$pick"
  [ "$cb_rate" = x ] && cb_rate=""; [ "$base_rate" = x ] && base_rate=""
  [ "$cb_cpu" = x ] && cb_cpu=""; [ "$base_cpu" = x ] && base_cpu=""
  echo "- $label: ratios of the $rounds rounds: $(printf '%s' "$lines" | awk '{ printf "%s%s", (NR > 1 ? ", " : ""), $1 }')" >> "$NOTES"
  printf '%s' "$lines" | awk -v label="$label" '
    $2 != "x" && $2 > cb { cb = $2 } $3 != "x" && $3 > base { base = $3 }
    END { if (cb > 0 && base > 0) printf "- %s: best rounds: citybrain %d msg/s, count_sub %d msg/s, ratio %.2f\n", label, cb, base, cb / base }' >> "$NOTES"
  row "$label" "messages/s (median of $rounds)" "${cb_rate:-not run}" "${base_rate:-not run} (count_sub)" "$(ratio "$cb_rate" "$base_rate")" "${GOAL:-}"
  row "$label" "CPU µs per message" "${cb_cpu:-not run}" "${base_cpu:-not run} (count_sub)" "$(ratio "$cb_cpu" "$base_cpu")" ""
  LAST_CB_RATE=$cb_rate
}


BENCH_T0=$SECONDS
# The machine is shared: its load at the start and the end go in the table's header.
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
CAP0=""   # citybrain's QoS 0 no-rules ingest rate, for the apiload section
if ! section ingest; then
  :
elif [ -x "$CB" ]; then
  GOAL="≥ 0.85" ingest_pair "ingest QoS 0, storage on, no rules" 0 "$N0"
  CAP0=$LAST_CB_RATE
  GOAL="≥ 0.8" ingest_pair "ingest QoS 1, storage on, no rules" 1 "$N1"
  mkdir -p "$TMP/rules"
  cp -r etc/rules/. "$TMP/rules/" 2>/dev/null
  bench/gen_rules.sh 100 > "$TMP/rules/generated.rules"
  NRULES=$(grep -ch '^rule ' "$TMP"/rules/*.rules | awk '{ n += $1 } END { print n }')
  GOAL="" ingest_pair "ingest QoS 0, storage on, $NRULES rules" 0 "$N0" --rules "$TMP/rules"
  GOAL="" ingest_pair "ingest QoS 1, storage on, $NRULES rules" 1 "$N1" --rules "$TMP/rules"
else
  row "ingest" "messages/s" "not run ($CB missing)" "" "" ""
fi

# ---- citybrain against Node-RED: highest sustained rate ----------------------------
NR_DIR=$ROOT/bench/node-red
NR_PID=""
NR_PORT=""
nr_count() { curl -s --max-time 2 "http://127.0.0.1:$NR_PORT/count" || echo 0; }
start_nr() {
  if [ ! -f "$NR_DIR/node_modules/node-red/red.js" ]; then
    log "installing Node-RED (npm ci, pinned in bench/node-red/package-lock.json)"
    (cd "$NR_DIR" && timeout 300 npm ci --no-audit --no-fund --loglevel=error >&2) || return 1
  fi
  NR_PORT=$(free_port)
  mkdir -p "$TMP/nr"
  sed -e "s/@PORT@/$BPORT/" -e "s/@QOS@/0/" "$NR_DIR/flows.json" > "$TMP/nr/flows.json"
  NR_PORT=$NR_PORT NR_FLOWS=$TMP/nr/flows.json NR_USERDIR=$TMP/nr \
    node "$NR_DIR/node_modules/node-red/red.js" --settings "$NR_DIR/settings.js" \
    > "$TMP/nr.log" 2>&1 &
  NR_PID=$!
  PIDS+=("$NR_PID")
  for _ in $(seq 300); do
    kill -0 "$NR_PID" 2>/dev/null || return 1
    mosquitto_pub -p "$BPORT" -t city/probe/probe/p0 -m '{"level":1}' 2>/dev/null
    if [ "$(nr_count)" -ge 1 ] 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}
stop_nr() { [ -n "$NR_PID" ] && kill "$NR_PID" 2>/dev/null && wait "$NR_PID" 2>/dev/null; NR_PID=""; }

# step_rates NAME COUNTFN PID: publishes RATE x STEP_S messages at each rate
# (QoS 0); a rate is sustained when the consumer has handled them all within
# 0.5 s of the publisher's last message (no backlog left growing). Prints
# "best cpu_us rss_mb".
STEP_S=${BENCH_STEP_S:-3}
RATES=${BENCH_RATES:-"2000 5000 10000 20000 40000 80000"}
[ "$QUICK" = 1 ] && RATES="2000 10000"
step_rates() {
  local fn=$1 pid=$2 best=0 msgs=0 cpu0 cpu1 r n c0 c
  cpu0=$(cpu_of "$pid")
  for r in $RATES; do
    n=$((r * STEP_S))
    c0=$($fn)
    "$TOOLS/flood_pub" --broker "$BROKER" --count "$n" --rate "$r" --qos 0 > /dev/null
    msgs=$((msgs + n))
    sleep 0.5
    c=$($fn)
    if [ $((c - c0)) -ge "$n" ]; then
      best=$r
    else
      # Let the backlog drain before stopping, so CPU per message is fair.
      wait_count "$fn" $((c0 + n)) 30 > /dev/null
      break
    fi
  done
  cpu1=$(cpu_of "$pid")
  awk -v a="$cpu0" -v b="$cpu1" -v m="$msgs" -v best="$best" -v rss="$(rss_mb "$pid")" \
    'BEGIN { printf "%s %.2f %s\n", best, (b - a) * 1e6 / m, rss }'
}

if section node-red && command -v node > /dev/null; then
  CBR="" ; NRR=""
  if [ -x "$CB" ] && start_cb 0 --rules "$TMP/rules"; then CBR=$(step_rates cb_handled "$CB_PID"); stop_cb; fi
  if start_nr; then NRR=$(step_rates nr_count "$NR_PID"); stop_nr; else log "Node-RED did not start: $(tail -3 "$TMP/nr.log" 2>/dev/null)"; fi
  read -r cbb cbc cbm <<< "$CBR"
  read -r nrb nrc nrm <<< "$NRR"
  row "vs Node-RED (QoS 0, $STEP_S s steps: $RATES)" "highest sustained msg/s" "${cbb:-not run}" "${nrb:-not run} (Node-RED 4.1.8)" "$(ratio "$cbb" "$nrb")" "> 1"
  row "vs Node-RED" "CPU µs per message" "${cbc:-not run}" "${nrc:-not run}" "$(ratio "$cbc" "$nrc")" "< 1"
  row "vs Node-RED" "RSS MB" "${cbm:-not run}" "${nrm:-not run}" "$(ratio "$cbm" "$nrm")" ""
fi

# ---- publish-to-alert latency at 10k msg/s, QoS 1 ------------------------------
LAT_N=${BENCH_LAT_N:-100000}
[ "$QUICK" = 1 ] && LAT_N=20000
if ! section latency; then
  :
elif [ -x "$CB" ] && start_cb 1 --rules bench/rules/latency.rules; then
  marks=$((LAT_N / 100))
  rm -f "$TMP/ready"
  "$TOOLS/alert_sub" --broker "$BROKER" --count "$marks" --timeout 60 --idle 5 \
    --ready "$TMP/ready" > "$TMP/alerts.txt" &
  asub=$!
  for _ in $(seq 200); do [ -f "$TMP/ready" ] && break; sleep 0.05; done
  "$TOOLS/flood_pub" --broker "$BROKER" --count "$LAT_N" --rate 10000 --qos 1 \
    --mark-every 100 > "$TMP/marks.txt"
  wait "$asub"
  stop_cb
  awk '$1 == "mark" { sent[$2] = $3 } $1 == "alert" && ($2 in sent) { print ($3 - sent[$2]) / 1000 }' \
    "$TMP/marks.txt" "$TMP/alerts.txt" | sort -n > "$TMP/lat.txt"
  got=$(wc -l < "$TMP/lat.txt")
  if [ "$got" -gt 0 ]; then
    p50=$(awk -v n="$got" 'NR == int(n * 0.50 + 0.5) || (NR == 1 && n == 1) { printf "%.2f", $1 }' "$TMP/lat.txt")
    p99=$(awk -v n="$got" 'NR == int(n * 0.99 + 0.5) || (NR == 1 && n == 1) { printf "%.2f", $1 }' "$TMP/lat.txt")
    row "publish-to-alert, 10k msg/s QoS 1 ($got of $marks marks)" "p50 / p99 ms" "$p50 / $p99" "" "" ""
  else
    row "publish-to-alert, 10k msg/s QoS 1" "p50 / p99 ms" "not run (no alert received)" "" "" ""
  fi
else
  row "publish-to-alert, 10k msg/s QoS 1" "p50 / p99 ms" "not run" "" "" ""
fi

# ---- the HTTP API under ingest load ------------------------------------------------
# citybrain (storage on, QoS 0) with 1,000 firing alerts: flood_pub sends the
# city stream at a fixed rate, half the QoS 0 no-rules capacity measured above
# (BENCH_APILOAD_RATE overrides; 20,000 msg/s when that figure is missing).
# First the stream alone: handled rate over AL_WIN s after 1 s of warm-up.
# Then the same stream while bench_api --port runs GET /api/alerts (gzip) and
# a 24-hour GET /api/series for one series the stream feeds, AL_S s each; the
# handled rate over the time bench_api ran. Bounded: about 30 s.
AL_S=${BENCH_APILOAD_S:-4}
[ "$QUICK" = 1 ] && AL_S=2
AL_WIN=$((2 * AL_S))
# cb_firing: number of firing alerts listed by GET /api/alerts?state=firing.
cb_firing() {
  curl -s --max-time 2 "http://127.0.0.1:$HPORT/api/alerts?state=firing" |
    python3 -c 'import json,sys
try: print(len(json.load(sys.stdin)["alerts"]))
except Exception: print(0)'
}
# handled_rate C0 T0: messages handled per second since (C0, T0).
handled_rate() {
  local c1 t1
  t1=$(now); c1=$(cb_handled)
  awk -v a="$1" -v b="$c1" -v s="$2" -v e="$t1" 'BEGIN { if (e > s) printf "%.0f", (b - a) / (e - s) }'
}
# apiload_stream RATE EXTRA_S: the city stream at RATE msg/s for AL_WIN +
# EXTRA_S seconds in the background (fp), then after 1 s of warm-up the start
# of the measured span (t0, c0).
apiload_stream() {
  local n
  n=$(awk -v r="$1" -v s="$AL_WIN" -v e="$2" 'BEGIN { printf "%d", r * (s + e) }')
  "$TOOLS/flood_pub" --broker "$BROKER" --count "$n" --rate "$1" --qos 0 > /dev/null &
  fp=$!
  PIDS+=("$fp")
  sleep 1
  t0=$(now); c0=$(cb_handled)
}
apiload() {
  local rate=$1 fp c0 t0 alone="" loaded=""
  mkdir -p "$TMP/apiload"
  cat > "$TMP/apiload/battery.rules" <<'RULES'
# One alert instance per sensor: every message of bench/batt/... carries a
# positive battery reading, so each of the 1,000 topics fires once.
rule bench_battery {
  title    "API load: one alert per sensor"
  match    "bench/batt/{district}/{kind}/{sensor}"
  when     battery > 0
  severity info
}
RULES
  start_cb 0 --rules "$TMP/apiload/battery.rules" || return 1
  "$TOOLS/flood_pub" --broker "$BROKER" --prefix bench/batt --topics 1000 --count 1000 \
    --rate 5000 --qos 1 > /dev/null
  if ! wait_count cb_firing 1000 10 > /dev/null; then
    log "apiload: only $(cb_firing) of 1,000 alerts firing"
    stop_cb
    return 1
  fi
  # The stream alone.
  apiload_stream "$rate" 2
  sleep "$AL_WIN"
  alone=$(handled_rate "$c0" "$t0")
  wait "$fp"
  # The same stream under API load. bench_api runs about 2 x AL_S s plus its
  # connections; the stream runs 4 s longer, so it covers the whole of it.
  apiload_stream "$rate" 5
  timeout $((AL_WIN + 20)) "$TOOLS/bench_api" --port "$HPORT" --seconds "$AL_S" --brief 1 \
    --series-topic city/d01/river/s001 --series-metric level > "$TMP/apiload/api.txt" \
    2> "$TMP/apiload/api.err"
  loaded=$(handled_rate "$c0" "$t0")
  kill -0 "$fp" 2>/dev/null || { log "apiload: the stream ended before the API load did"; loaded=""; }
  wait "$fp"
  echo "- API under ingest load: $(cb_firing) alerts firing at the end; /api/alerts answer $(kv "$TMP/apiload/api.txt" daemon_alerts_body_bytes) bytes gzipped, /api/series answer $(kv "$TMP/apiload/api.txt" daemon_series_24h_body_bytes) bytes; citybrain RSS $(rss_mb "$CB_PID") MB; dropped (QoS 0 hand-off full): $(cb_metric citybrain_mqtt_dropped_total)" >> "$NOTES"
  stop_cb
  local f=$TMP/apiload/api.txt
  row "API under ingest load ($rate msg/s): GET /api/alerts, 1,000 firing, gzip" "req/s" "$(kv "$f" daemon_alerts_rps)" "" "" "≥ 20000"
  row "API under ingest load: GET /api/alerts" "p50 / p99 ms" "$(kv "$f" daemon_alerts_p50_ms) / $(kv "$f" daemon_alerts_p99_ms)" "" "" "p99 ≤ 5"
  row "API under ingest load: GET /api/series, 24 h, 5 m buckets" "req/s" "$(kv "$f" daemon_series_24h_rps)" "" "" ""
  row "API under ingest load: GET /api/series" "p50 / p99 ms" "$(kv "$f" daemon_series_24h_p50_ms) / $(kv "$f" daemon_series_24h_p99_ms)" "" "" ""
  row "ingest at $rate msg/s offered (half capacity), QoS 0, 1,000 firing" "handled msg/s" "${loaded:-not run} (with API load)" "${alone:-not run} (no API load)" "$(ratio "$loaded" "$alone")" ""
  log "apiload: ingest $alone msg/s alone, $loaded msg/s under API load; $(tr '\n' ' ' < "$f")"
}
if section apiload; then
  if [ -x "$CB" ] && [ -x "$TOOLS/bench_api" ]; then
    AL_RATE=${BENCH_APILOAD_RATE:-$(awk -v c="$CAP0" 'BEGIN { if (c > 0) printf "%d", c / 2; else print 20000 }')}
    apiload "$AL_RATE" || row "API under ingest load" "" "not run (set-up failed: $(tail -1 "$TMP/cb.log" | tr '|' '/'))" "" "" ""
  else
    row "API under ingest load" "" "not run (citybrain or bench_api not built)" "" "" ""
  fi
fi

# ---- steady state: series with history, 1 sample/series/s, QoS 1 ----------------
# bench/steady.sh (its own broker and engine; about 5 minutes, 1 with
# BENCH_QUICK=1): bytes written and CPU per sample by thread, committed
# samples/s, and a flood's committed rate into the same series.
if section steady; then
  if [ -x "$CB" ] && [ -x "$TOOLS/flood_pub" ] && [ -x "$TOOLS/count_sub" ]; then
    CB=$CB BENCH_QUICK=$QUICK timeout 1200 bench/steady.sh > "$TMP/steady.md" 2> "$TMP/steady.err" ||
      log "steady: failed: $(tail -3 "$TMP/steady.err")"
    grep '^|' "$TMP/steady.md" >> "$ROWS"
    grep '^- ' "$TMP/steady.md" >> "$NOTES"
  else
    row "steady state" "" "not run (citybrain, flood_pub or count_sub not built)" "" "" ""
  fi
fi

# ---- other helpers' benchmark programs -------------------------------------------
declare -A seen=()
for p in "${PROGS[@]}"; do seen[$(basename "$p")]=1; done
for want in bench_rules bench_storage bench_alerts bench_api bench_chunk; do
  [ -n "${seen[$want]:-}" ] || PROGS+=("$ROOT/build/bench/$want")
done
section programs || PROGS=()
for p in "${PROGS[@]}"; do
  name=$(basename "$p")
  if [ ! -x "$p" ]; then
    row "$name" "" "not run (not built)" "" "" ""
    continue
  fi
  log "running $name"
  if BENCH_QUICK=$QUICK CB_BIN=$CB timeout 180 "$p" > "$TMP/$name.out" 2> "$TMP/$name.err"; then
    # Lines `key value [baseline [goal]]`; a key ending in _ratio is shown as is.
    while read -r k v rest; do
      [ -n "$k" ] && [ -n "$v" ] || continue
      case "$k" in \#*) continue ;; esac
      row "$name" "$k" "$v" "${rest:-}" "" ""
    done < "$TMP/$name.out"
  else
    row "$name" "" "not run (failed: $(tail -1 "$TMP/$name.err" | tr '|' '/'))" "" "" ""
  fi
done

# ---- the table ---------------------------------------------------------------------
CPU=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
{
  echo "Machine: $(nproc) cores, ${CPU:-unknown CPU}, $(free -m | awk '/^Mem:/ { print $2 " MB RAM" }'), $(uname -sr); mosquitto $(mosquitto -h 2>/dev/null | awk 'NR == 1 { print $3 }'); commit $(git describe --always --dirty 2>/dev/null || echo unknown); $(date -u '+%Y-%m-%d %H:%M UTC'); run took $((SECONDS - BENCH_T0)) s; load average $LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
  echo
  echo "| benchmark | figure | citybrain | baseline (same run) | ratio | goal |"
  echo "| --- | --- | --- | --- | --- | --- |"
  cat "$ROWS"
  echo
  cat "$NOTES"
} > "$TMP/table.md"
cat "$TMP/table.md"
if [ -n "$ONLY" ]; then
  log "BENCH_ONLY=$ONLY: BENCHMARKS.md left as it is"
  exit 0
fi
# The sections filled by hand (## Steady state: a BENCH_STEADY_BASE run of
# bench/steady.sh; ## Fuzzing and ## Soak: make fuzz and make soak) follow the
# table and are kept as they are.
KEEP=$(awk '/^## (Steady state|Fuzzing|Soak)/ { keep = 1 } keep' "$ROOT/BENCHMARKS.md" 2>/dev/null)
{
  cat <<'EOF'
# Benchmarks

Produced by `make bench` (bench/run.sh); every figure is measured in one run on the machine
named below, each beside a baseline measured in the same run. Reproduce with:

```sh
make bench                      # everything, about 12 minutes, loopback only
BENCH_QUICK=1 bench/run.sh      # smaller counts, a smoke run
```

How the figures are taken (bench/run.sh has the details):
- **ingest** (seven rounds by default, `BENCH_ROUNDS`; the figure column says how many the run
  below had; alternating, the table shows the round with the median ratio and
  the notes every round's ratio, and the ratio of each side's best round: the noise of a
  shared machine only ever slows a side down, so a side's fastest round is its least
  disturbed one; on this shared 2-core machine the count_sub baseline alone swings by 1.5x
  between rounds, so the CPU per message is the steadier comparison):
  `bench/flood_pub` publishes N ~100-byte JSON messages over 10,080 topics as fast
  as it can (N = 200,000 at QoS 0, 100,000 at QoS 1, at most 1,000 unacknowledged at QoS 1,
  the broker's in-flight window) to a private mosquitto; the baseline is
  `bench/count_sub`, a Paho MQTTAsync subscriber that only counts, then `citybrain run` with
  storage on (alone, on the same broker and stream). Throughput is N over the time from the
  publisher's start to the Nth message handled (citybrain: its gauge
  `citybrain_ingest_last_message_timestamp_seconds`, read once all N are counted in
  `citybrain_ingest_messages_total`; nothing polls `/metrics` while the publisher runs):
  handled means decoded, evaluated and queued for the
  SQLite writer, whose commits run on behind (the notes below give the rows committed by
  then; QoS 1 messages are journaled before they are acknowledged). CPU per message from
  `/proc/PID/stat` (utime + stime), over the same span.
- **vs Node-RED**: the same stream at stepped rates (QoS 0); a rate is sustained when every
  message was handled 0.5 s after the last one was sent. Node-RED runs
  `bench/node-red/flows.json` (MQTT in, JSON, switch on a threshold, MQTT out, plus a counter),
  citybrain runs etc/rules plus 100 generated rules.
- **latency**: 10,000 msg/s at QoS 1 for 10 s; every 100th message goes to its own
  `bench/mark/mN` topic and fires `bench/rules/latency.rules`; the time from its send to the
  arrival of the alert on `citybrain/alerts/#` at a subscriber (same machine clock).
- **outbox** (`bench_outbox`, its own program): what queueing one webhook notification costs
  the loop with 100 (the baseline, same run), 10,000 and 100,000 already queued, each its own
  alert instance and waiting for a retry an hour away, as while a receiver is down (the best of
  three rounds of 2,000 rows). Flat means scheduling costs what is due, not what is queued.
- **API under ingest load**: `citybrain run` (storage on, QoS 0, `--http` on loopback) with
  a rule that fires once per sensor, fed 1,000 `bench/batt/...` topics once, so
  `GET /api/alerts` lists 1,000 firing alerts. `flood_pub --rate` then offers the city stream
  at half the QoS 0 no-rules ingest rate of the same run; the handled rate
  (`citybrain_ingest_messages_total` deltas) is taken alone over 8 s after 1 s of warm-up,
  then over the time `bench_api --port` runs against the daemon: 2 keep-alive clients for
  4 s each on `GET /api/alerts` with `Accept-Encoding: gzip` (as dashboards send it) and on
  a 24-hour `GET /api/series` (5-minute buckets) of `city/d01/river/s001` `level`, which
  the stream feeds (only the samples of this run: the query spans 24 h, the data seconds).
  The ratio is the ingest rate with API load over without; the clients share the machine's
  cores with citybrain, mosquitto and the publisher.
- **steady state** (`bench/steady.sh`, alone: `make bench-steady`; about 5 minutes): a fresh
  `citybrain run` (QoS 1, storage on, no rules, database and journal on disk under /var/tmp)
  is first given 10 minutes of 1 Hz history for each of 10,000 series through MQTT (SenML
  packs of 60 samples, one minute of every series at a time, each minute committed before the
  next is sent), then
  `flood_pub --bare 1` sends one sample per series per second (10,000 msg/s, a bare number on
  each topic, QoS 1) for 180 s. Over the window from 30 s in to 5 s before the end: bytes
  written by the whole process (`/proc/PID/io`: `write_bytes`, what reaches the disk's page
  cache as dirtied pages of every file: journal, database, WAL; `wchar` and `syscw`, what was
  handed to `write(2)`), CPU per committed sample of each thread by name
  (`/proc/PID/task/*/stat`: `MQTTAsync_rcv` is Paho's receive thread, `cb-store` the SQLite
  writer, `citybrain` the libuv loop: decoding and rules) and of the whole process, and
  committed samples/s (`citybrain_storage_rows_written_total`, counted after each commit).
  After the run `citybrain query` (its own read-only connection) must list every sample sent.
  Then a flood of 200,000 bare messages into the same series (QoS 1, 1,000 in flight): the
  committed rate from the publisher's start until all are committed, and CPU per message.
  The baseline is `count_sub` on the same stream (30 s): Paho alone, for the CPU per message;
  with `BENCH_STEADY_BASE=COMMIT` the whole scenario runs first for the engine of that commit
  (built from `git archive`), and the rows show it beside this one (the section "Steady
  state" below has such a run).
- **chunk codec** (`bench_chunk`, alone: `make bench-chunk`; docs/storage.md, "Chunk codec"):
  a simulated day of the city (`citybrain sim --out`, 4 districts x 3 sensors x 9 kinds, each
  sensor every 10 s: 132 series, 1,140,480 samples) and one day of generated series (1 to 3
  decimals, steps, counters, full-precision averages; jittered timestamps, gaps), cut into
  chunks of 120, 240 and 480 samples of one series; blob bytes per sample of RAW, GORILLA,
  DECIMAL (GORILLA where it cannot scale) and the best of them per chunk (the baseline column:
  GORILLA alone); the same city samples written by Prometheus 2.42's `promtool tsdb
  create-blocks-from openmetrics` (2-hour blocks; "not run" without Debian's `prometheus`);
  encode and decode ns per sample in chunks of 120, the fastest of five passes. The codec
  alone: no SQLite pages, row keys or index around the blobs.

EOF
  cat "$TMP/table.md"
  if [ -n "$KEEP" ]; then printf '\n%s\n' "$KEEP"; fi
} > "$ROOT/BENCHMARKS.md"
log "table written to BENCHMARKS.md"
