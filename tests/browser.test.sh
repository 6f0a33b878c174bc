#!/usr/bin/env bash
# The console in headless Chromium against a real engine: a private
# mosquitto on a free loopback port, `citybrain run` with rules that fire on
# one message (titles and messages in Chinese and English), and the specs in
# tests/browser/ (playwright-core driving Debian's /usr/bin/chromium):
#   dashboard.spec.mjs  live alerts, sign-in and acknowledgement, the chart
#   console.spec.mjs    both languages, the clock, the map and a district,
#                       grade groups, live values, wall and laptop screens,
#                       and reconnection after the engine restarts (the spec
#                       restarts it: CB_ENGINE_CMD, pid in CB_PID_FILE)
#   workflows.spec.mjs  silences, closing a stale alert, history, audit, the
#                       shift handover and its presets, every page at
#                       1366x768; once in Chinese and once in English, each
#                       against an engine of its own (below)
#   map_label.spec.mjs  a sensor placed on the map by its topic's lat/lon
#                       labels (sensors.label_pattern), against an engine
#                       of its own with such a pattern
# Screenshots go to tests/out/. Run by `make test`; needs CB_BIN (set by make).
set -euo pipefail

ROOT=${CB_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"
BIN=${CB_BIN:-$ROOT/build/asan/citybrain}
OUT_DIR=$ROOT/tests/out
mkdir -p "$OUT_DIR"

for need in "$BIN" /usr/bin/chromium "$(command -v mosquitto || echo /usr/sbin/mosquitto)"; do
  if [ ! -x "$need" ]; then echo "browser.test: $need is missing" >&2; exit 1; fi
done

# The chart library the page loads from vendor/ (make dashboard), and the
# test's own node modules (playwright-core, pinned).
if [ ! -f api/dashboard/vendor/uPlot.iife.min.js ]; then
  make --no-print-directory -s dashboard 2>/dev/null || make --no-print-directory -s -f api/dashboard.mk dashboard
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

TMP=$(mktemp -d /tmp/cb-browser-XXXXXX)
MOSQ_PID=""
CB_PID=""
cleanup() {
  [ -n "$CB_PID" ] && kill "$CB_PID" 2>/dev/null && wait "$CB_PID" 2>/dev/null || true
  # an engine the console spec started
  if [ -s "$TMP/engine.pid" ]; then kill "$(cat "$TMP/engine.pid")" 2>/dev/null || true; fi
  [ -n "$MOSQ_PID" ] && kill "$MOSQ_PID" 2>/dev/null && wait "$MOSQ_PID" 2>/dev/null || true
  if [ "${CB_KEEP_TMP:-0}" = 1 ]; then echo "browser.test: kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

free_port() {
  node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}
wait_port() { # port timeout_s
  local end=$((SECONDS + $2))
  while [ $SECONDS -lt "$end" ]; do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

MQTT_PORT=$(free_port)
HTTP_PORT=$(free_port)
TOKEN="browser-test-$RANDOM$RANDOM"

cat > "$TMP/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
EOF
mosquitto -c "$TMP/mosquitto.conf" > "$TMP/mosquitto.log" 2>&1 &
MOSQ_PID=$!
wait_port "$MQTT_PORT" 10 || { echo "browser.test: mosquitto did not start" >&2; cat "$TMP/mosquitto.log" >&2; exit 1; }

cat > "$TMP/flood.rules" <<'EOF'
# Each fires on one message.
rule flood_now {
  title    "River level above 9 m"
  title zh "河道水位超过 9 米"
  match    "city/{district}/river/{sensor}"
  per      district
  when     max(sensors: level) > 9
  severity critical
  message  "{district}: river level above 9 m"
  message zh "{district}：河道水位超过 9 米"
}
rule gas_now {
  title    "Methane leak"
  title zh "燃气泄漏"
  match    "city/{district}/gas/{sensor}"
  when     ch4 >= 10
  severity major
  message  "{sensor}: methane at {ch4:.0f}% LEL"
  message zh "{sensor}：甲烷浓度 {ch4:.0f}% LEL"
}
rule noise_now {
  title    "Noise above 70 dB"
  title zh "噪声超过 70 分贝"
  match    "city/{district}/noise/{sensor}"
  when     db > 70
  severity info
  message  "{sensor}: {db:.0f} dB"
  message zh "{sensor}：{db:.0f} 分贝"
}
EOF

# The engine's command line, also for the console spec's restart (the token
# goes through the environment).
ENGINE_CMD=("$BIN" run
  --broker "tcp://127.0.0.1:$MQTT_PORT" --client-id "cb-browser-test"
  --db "$TMP/city.db" --rules "$TMP/flood.rules" --http "127.0.0.1:$HTTP_PORT"
  --set http.time_zone=Asia/Shanghai --log-level info)
CITYBRAIN_API_TOKEN=$TOKEN "${ENGINE_CMD[@]}" > "$TMP/citybrain.log" 2>&1 &
CB_PID=$!
if ! wait_port "$HTTP_PORT" 20; then
  echo "browser.test: citybrain did not open its HTTP port" >&2
  cat "$TMP/citybrain.log" >&2
  exit 1
fi
# Wait for the MQTT session, so the published message is not missed.
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$HTTP_PORT/api/health" 2>/dev/null | grep -q '"mqtt":"connected"' && break
  sleep 0.1
done

rc=0
CB_URL="http://127.0.0.1:$HTTP_PORT/" CB_BROKER_PORT=$MQTT_PORT CB_TOKEN=$TOKEN \
CB_OUT="$OUT_DIR/dashboard.png" \
  timeout 120 node tests/browser/dashboard.spec.mjs || rc=$?

if [ $rc -eq 0 ]; then
  # The console spec restarts the engine: it gets the command (one argument
  # per line) and writes the pid of the engine it started to engine.pid.
  printf '%s\n' "${ENGINE_CMD[@]}" > "$TMP/engine.cmd"
  CB_URL="http://127.0.0.1:$HTTP_PORT/" CB_BROKER_PORT=$MQTT_PORT CB_TOKEN=$TOKEN \
  CB_OUT_DIR="$OUT_DIR" CB_PID=$CB_PID CB_ENGINE_CMD="$TMP/engine.cmd" \
  CB_PID_FILE="$TMP/engine.pid" CB_ENGINE_LOG="$TMP/citybrain2.log" \
    timeout 300 node tests/browser/console.spec.mjs || rc=$?
  if [ -s "$TMP/engine.pid" ]; then
    # the spec stopped the first engine, which must have exited cleanly
    first=0
    wait "$CB_PID" || first=$?
    if [ "$first" -ne 0 ]; then echo "browser.test: the first engine exited with $first" >&2; rc=1; fi
    CB_PID=$(cat "$TMP/engine.pid")
    rm -f "$TMP/engine.pid"
  fi
fi

# An engine of its own for one spec, on a fresh database and the same
# broker: own_engine NAME SPEC SECONDS [RUN OPTION...]; SPEC_ENV (words
# VAR=value) adds to the spec's environment. The engine must then stop
# cleanly on SIGTERM.
own_engine() {
  local name=$1 spec=$2 secs=$3 http log=$TMP/$1.log pid st=0 r=0
  shift 3
  http=$(free_port)
  CITYBRAIN_API_TOKEN=$TOKEN "$BIN" run --broker "tcp://127.0.0.1:$MQTT_PORT" --client-id "cb-browser-$name" \
    --db "$TMP/$name.db" --rules "$TMP/flood.rules" --http "127.0.0.1:$http" "$@" --log-level info > "$log" 2>&1 &
  pid=$!
  if wait_port "$http" 20; then
    for _ in $(seq 1 100); do
      curl -fsS "http://127.0.0.1:$http/api/health" 2>/dev/null | grep -q '"mqtt":"connected"' && break
      sleep 0.1
    done
    # shellcheck disable=SC2086 # SPEC_ENV is words on purpose
    env CB_URL="http://127.0.0.1:$http/" CB_BROKER_PORT="$MQTT_PORT" CB_TOKEN="$TOKEN" CB_OUT_DIR="$OUT_DIR" \
      ${SPEC_ENV:-} timeout "$secs" node "tests/browser/$spec" || r=1
  else
    echo "browser.test: the $name engine did not open its HTTP port" >&2
    r=1
  fi
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || st=$?
  if [ "$st" -ne 0 ] || ! grep -q "stopped cleanly" "$log"; then
    echo "browser.test: the $name engine did not exit cleanly ($st)" >&2
    r=1
  fi
  [ $r -ne 0 ] && tail -n 40 "$log" >&2
  return $r
}

# The workflows spec, once per language: sensors go stale after 2 s (so an
# alert can be closed by hand), a fresh database (so the audit log holds only
# what the spec does).
workflows() { # lang
  SPEC_ENV="CB_LANG=$1" own_engine "wf-$1" workflows.spec.mjs 180 \
    --set http.time_zone=Asia/Shanghai --set sensors.stale_after=2s
}

if [ $rc -eq 0 ]; then
  workflows zh-CN || rc=1
  # the same districts and sensors again: the Chinese run's alerts are gone
  # with its engine (a fresh database), the broker keeps nothing retained
  [ $rc -eq 0 ] && { workflows en-US || rc=1; }
fi

# Sensors placed by their topics: an engine whose label pattern captures
# lat and lon (no rule matches its topics: the spec looks at the map only).
[ $rc -eq 0 ] && { own_engine label map_label.spec.mjs 120 \
  --set 'sensors.label_pattern=city/{district}/{kind}/{sensor}/{lat}/{lon}' || rc=1; }

# The engine must still shut down cleanly after the browser's visit (the
# restarted one is no child of this shell: its log says how it ended).
LOG="$TMP/citybrain.log"
[ -f "$TMP/citybrain2.log" ] && LOG="$TMP/citybrain2.log"
kill -TERM "$CB_PID" 2>/dev/null || true
for _ in $(seq 300); do kill -0 "$CB_PID" 2>/dev/null || break; sleep 0.1; done
wait "$CB_PID" 2>/dev/null || true
if kill -0 "$CB_PID" 2>/dev/null || ! grep -q "stopped cleanly" "$LOG"; then
  echo "browser.test: citybrain did not exit cleanly" >&2
  rc=1
fi
CB_PID=""
if [ $rc -ne 0 ]; then
  echo "browser.test: failed; engine log:" >&2
  tail -n 40 "$TMP/citybrain.log" >&2
  [ -f "$TMP/citybrain2.log" ] && tail -n 40 "$TMP/citybrain2.log" >&2
fi
exit $rc
