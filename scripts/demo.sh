#!/usr/bin/env bash
# The citybrain demonstration (`make demo`): a private mosquitto on a free
# loopback port, the engine with etc/rules on a temporary database, and the
# city simulator playing bench/scenarios/demo.scn. Prints the console's URL
# with a fresh operator token (random, from /dev/urandom, given to the engine
# as CITYBRAIN_API_TOKEN) and the incidents to watch for. Ctrl-C stops every
# process once: the simulator, then the engine (which flushes, logs
# "stopped cleanly" and exits 0), then the broker.
#
# usage: scripts/demo.sh [--duration D] [--no-build] [--scenario FILE] [--rate R]
#   --duration D   stop by itself after D (e.g. 90s, 10m): for tests and CI
#   --no-build     skip setup and build (the caller did them)
# Environment: CB (the binary, default build/citybrain), DEMO_KEEP=1 keeps the
# temporary directory (logs, database) after the end.
# The processes run in sessions of their own (setsid): a terminal's Ctrl-C
# reaches this script only, and the script stops each of them exactly once
# (a second SIGINT would make the engine exit at once, in mid-flush).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CB=${CB:-$ROOT/build/citybrain}
DURATION=""
BUILD=1
SCENARIO=bench/scenarios/demo.scn
RATE=200
DISTRICTS=6
SENSORS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --scenario) SCENARIO=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown option $1" >&2; exit 2 ;;
  esac
done

if [ "$BUILD" = 1 ]; then
  scripts/setup.sh || exit 1
  make --no-print-directory -j2 build/citybrain dashboard || exit 1
fi
# The console's chart library, installed by `make dashboard` (npm, pinned).
if [ ! -f api/dashboard/vendor/uPlot.iife.min.js ]; then
  echo "demo: the console's chart library is missing: run make dashboard" >&2
  exit 1
fi

TMP=$(mktemp -d /tmp/citybrain-demo.XXXXXX)
MOSQ=""; ENGINE=""; SIM=""
stopping=0
shutdown() {
  [ "$stopping" = 1 ] && return
  stopping=1
  echo
  echo "demo: stopping"
  [ -n "$SIM" ] && kill -INT "$SIM" 2>/dev/null && wait "$SIM" 2>/dev/null
  if [ -n "$ENGINE" ] && kill -INT "$ENGINE" 2>/dev/null; then
    # One SIGINT: the engine drains MQTT, flushes storage and closes its
    # session. Give it time; only a hung engine is killed.
    for _ in $(seq 300); do kill -0 "$ENGINE" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$ENGINE" 2>/dev/null && echo "demo: the engine did not stop within 30 s" >&2
    wait "$ENGINE"
    rc=$?
    if [ "$rc" = 0 ] && grep -q "stopped cleanly" "$TMP/citybrain.log"; then
      echo "demo: the engine stopped cleanly (exit 0)"
    else
      echo "demo: engine exited with status $rc; its log ends:" >&2
      tail -5 "$TMP/citybrain.log" >&2
    fi
  fi
  [ -n "$MOSQ" ] && kill "$MOSQ" 2>/dev/null && wait "$MOSQ" 2>/dev/null
  if [ "${DEMO_KEEP:-0}" = 1 ]; then
    echo "demo: logs and database kept in $TMP"
  else
    rm -rf "$TMP"
  fi
  echo "demo: stopped"
}
trap 'shutdown; exit 0' INT TERM
trap shutdown EXIT

# shellcheck source=scripts/broker.sh
. "$ROOT/scripts/broker.sh"
start_broker "$TMP"

HPORT=$(free_port)
# The operator token: 128 random bits, given to the engine through the
# environment (never on a command line, where ps would show it).
TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
CITYBRAIN_API_TOKEN=$TOKEN setsid "$CB" run --config etc/citybrain.conf --broker "tcp://127.0.0.1:$BPORT" --topic 'city/#' \
  --client-id citybrain-demo --db "$TMP/citybrain.db" --rules etc/rules \
  --http "127.0.0.1:$HPORT" --log-level info > "$TMP/citybrain.log" 2>&1 &
ENGINE=$!
up=0
for _ in $(seq 100); do
  kill -0 "$ENGINE" 2>/dev/null || break
  if curl -s --max-time 1 "http://127.0.0.1:$HPORT/api/health" > /dev/null; then up=1; break; fi
  sleep 0.1
done
if [ "$up" != 1 ]; then
  echo "demo: the engine did not come up; its log:" >&2
  tail -20 "$TMP/citybrain.log" >&2
  exit 1
fi

SIM_ARGS=(--broker "tcp://127.0.0.1:$BPORT" --rate "$RATE" --districts "$DISTRICTS"
          --sensors "$SENSORS" --scenario "$SCENARIO" --qos 1)
[ -n "$DURATION" ] && SIM_ARGS+=(--duration "$DURATION")
setsid "$CB" sim "${SIM_ARGS[@]}" > "$TMP/sim.log" 2>&1 &
SIM=$!

cat <<EOF

  citybrain demo
  --------------
  console     http://127.0.0.1:$HPORT/
  token       $TOKEN   (operator token: the console's sign-in takes it)
  signed in   http://127.0.0.1:$HPORT/#token=$TOKEN
  alerts      http://127.0.0.1:$HPORT/api/alerts
  metrics     http://127.0.0.1:$HPORT/metrics
  broker      tcp://127.0.0.1:$BPORT   (mosquitto_sub -p $BPORT -t 'citybrain/alerts/#' -v)
  city        $DISTRICTS districts x $SENSORS sensors x 9 kinds, $RATE messages/s
  logs        $TMP/citybrain.log, $TMP/sim.log
  database    $TMP/citybrain.db
  processes   broker $MOSQ, engine $ENGINE, simulator $SIM

  What to watch for (minutes from now; rules in etc/rules):
EOF
awk '/^[ \t]*at / { printf "    %-5s %-15s %s %s  (for %s)\n", $2, $5, $6, ($7 ~ /^s[0-9]/ ? $7 : "all sensors"), $4 }' "$SCENARIO"
echo
echo "  Ctrl-C stops everything."
echo

# Wait for the simulator (a --duration run) or for Ctrl-C; also stop if the
# engine dies.
while kill -0 "$SIM" 2>/dev/null; do
  if ! kill -0 "$ENGINE" 2>/dev/null; then
    echo "demo: the engine exited; its log:" >&2
    tail -20 "$TMP/citybrain.log" >&2
    ENGINE=""
    exit 1
  fi
  sleep 0.5
done
wait "$SIM"
SIM=""
echo "demo: the simulator finished"
exit 0
