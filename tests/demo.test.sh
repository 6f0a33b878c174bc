#!/usr/bin/env bash
# `make demo` comes up, serves the dashboard and the API, raises an alert from
# the simulator's incidents, and stops everything cleanly on SIGINT.
# Uses scripts/demo.sh with a fast scenario (incidents from second 0) so the
# first alert comes within the rules' own `for` durations.
set -uo pipefail
set -m   # job control: the demo gets its own process group and SIGINT is not ignored
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TMP=$(mktemp -d)
DEMO=""
cleanup() {
  [ -n "$DEMO" ] && kill -9 -- -"$DEMO" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

if ! ls etc/rules/*.rules > /dev/null 2>&1; then
  echo "demo.test: etc/rules has no rule files yet: nothing to check (SKIP)"
  exit 0
fi
[ -x build/citybrain ] || make --no-print-directory -j2 build/citybrain || exit 1

cat > "$TMP/fast.scn" <<'SCN'
at 0s for 30m gas_leak      d01 ramp=1s
at 0s for 30m manhole_tilt  d02 ramp=1s
at 0s for 30m waterlogging  d03 ramp=1s
at 0s for 30m river_rise    d04 ramp=1s
at 0s for 30m air_episode   d05 ramp=1s
at 0s for 30m congestion    d06 ramp=1s
SCN
: > "$TMP/demo.out"
scripts/demo.sh --no-build --scenario "$TMP/fast.scn" --duration 30m > "$TMP/demo.out" 2>&1 &
DEMO=$!

url=""
for _ in $(seq 300); do
  url=$(awk '/dashboard/ { print $2; exit }' "$TMP/demo.out")
  [ -n "$url" ] && break
  kill -0 "$DEMO" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "demo.test: FAIL: no dashboard URL; output:"; cat "$TMP/demo.out"; exit 1
fi
pids=$(awk '/processes/ { print $3, $5, $7 }' "$TMP/demo.out" | tr -d ',')
echo "demo.test: dashboard at $url (pids $pids)"

code=$(curl -s -o "$TMP/index.html" -w '%{http_code}' "$url")
if [ "$code" != 200 ] || ! grep -qi '<html' "$TMP/index.html"; then
  echo "demo.test: FAIL: GET / answered $code"; exit 1
fi

alert=""
for _ in $(seq 180); do
  if curl -s --max-time 2 "${url}api/alerts" > "$TMP/alerts.json" && grep -q '"rule"' "$TMP/alerts.json"; then
    alert=$(grep -o '"rule":"[^"]*"' "$TMP/alerts.json" | head -1)
    break
  fi
  kill -0 "$DEMO" 2>/dev/null || break
  sleep 1
done
if [ -z "$alert" ]; then
  echo "demo.test: FAIL: no alert within 180 s; demo output:"; cat "$TMP/demo.out"; exit 1
fi
echo "demo.test: alert raised: $alert"

kill -INT "$DEMO"
for _ in $(seq 200); do kill -0 "$DEMO" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$DEMO" 2>/dev/null; then
  echo "demo.test: FAIL: the demo did not stop within 20 s of SIGINT"; exit 1
fi
wait "$DEMO"; rc=$?
DEMO=""
for p in $pids; do
  if kill -0 "$p" 2>/dev/null; then echo "demo.test: FAIL: process $p still running"; exit 1; fi
done
if ! grep -q "engine exited with status 0" "$TMP/demo.out"; then
  echo "demo.test: FAIL: the engine did not exit cleanly:"; tail -5 "$TMP/demo.out"; exit 1
fi
echo "demo.test: stopped cleanly (exit $rc)"
exit 0
