#!/usr/bin/env bash
# `make demo` comes up, serves the console and the API, raises an alert from
# the simulator's incidents; in headless Chromium (tests/browser/demo.spec.mjs)
# the printed sign-in link opens the console, the chart draws, and an
# acknowledgement made on the page reaches the store (the SQLite row); then
# SIGINT to the demo's process group, as a terminal's Ctrl-C, ends every
# process it started, the engine with "stopped cleanly" and exit 0.
# Uses scripts/demo.sh with a fast scenario (incidents from second 0) so the
# first alert comes within the rules' own `for` durations.
set -uo pipefail
set -m   # job control: the demo gets its own process group and SIGINT is not ignored
# (by this shell; a SIGINT ignored by whoever started this test, e.g. a
# `nohup ... &` from a script, would be inherited and, bash being unable to
# trap a signal ignored on entry, the demo would never see its Ctrl-C: so the
# demo starts with SIGINT's default disposition restored, as a terminal has it)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TMP=$(mktemp -d)
DEMO=""
pids=""
cleanup() {
  [ -n "$DEMO" ] && kill -9 -- -"$DEMO" 2>/dev/null
  for p in $pids; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT

if ! ls etc/rules/*.rules > /dev/null 2>&1; then
  echo "demo.test: etc/rules has no rule files yet: nothing to check (SKIP)"
  exit 0
fi
make --no-print-directory -s -j2 build/citybrain dashboard || exit 1
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --silent) || exit 1
fi

cat > "$TMP/fast.scn" <<'SCN'
at 0s for 30m gas_leak      d01 ramp=1s
at 0s for 30m manhole_tilt  d02 ramp=1s
at 0s for 30m waterlogging  d03 ramp=1s
at 0s for 30m river_rise    d04 ramp=1s
at 0s for 30m air_episode   d05 ramp=1s
at 0s for 30m congestion    d06 ramp=1s
SCN
: > "$TMP/demo.out"
env --default-signal=INT scripts/demo.sh --no-build --scenario "$TMP/fast.scn" --duration 30m > "$TMP/demo.out" 2>&1 &
DEMO=$!

url=""
for _ in $(seq 300); do
  url=$(awk '$1 == "console" { print $2; exit }' "$TMP/demo.out")
  [ -n "$url" ] && break
  kill -0 "$DEMO" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "demo.test: FAIL: no console URL; output:"; cat "$TMP/demo.out"; exit 1
fi
pids=$(awk '/processes/ { print $3, $5, $7 }' "$TMP/demo.out" | tr -d ',')
token=$(awk '$1 == "token" { print $2; exit }' "$TMP/demo.out")
db=$(awk '$1 == "database" { print $2; exit }' "$TMP/demo.out")
echo "demo.test: console at $url (pids $pids)"
if [ -z "$token" ] || [ "${#token}" -lt 32 ]; then
  echo "demo.test: FAIL: no operator token printed"; cat "$TMP/demo.out"; exit 1
fi

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

# The console: chart, sign-in link, an acknowledgement on the page.
mkdir -p tests/out
CB_URL=$url CB_TOKEN=$token CB_BROKER_PORT=0 CB_OUT=tests/out/demo.png \
  timeout 150 node tests/browser/demo.spec.mjs > "$TMP/spec.out" 2>&1
spec=$?
cat "$TMP/spec.out"
[ $spec -eq 0 ] || { echo "demo.test: FAIL: the console in the browser"; exit 1; }
acked=$(awk '$1 == "acked" { print $2; exit }' "$TMP/spec.out")
row=""
for _ in $(seq 100); do
  row=$(sqlite3 "file:$db?mode=ro" "SELECT acked_by FROM alert_instances WHERE id = '$acked' AND acked_at > 0" 2>/dev/null)
  [ -n "$row" ] && break
  sleep 0.1
done
if [ -z "$row" ]; then
  echo "demo.test: FAIL: the acknowledgement of $acked is not in the store ($db)"; exit 1
fi
echo "demo.test: acknowledgement in the store: $acked by $row"

# Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group.
kill -INT -- -"$DEMO"
for _ in $(seq 400); do kill -0 "$DEMO" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$DEMO" 2>/dev/null; then
  echo "demo.test: FAIL: the demo did not stop within 40 s of SIGINT"; exit 1
fi
wait "$DEMO"; rc=$?
DEMO=""
for p in $pids; do
  if kill -0 "$p" 2>/dev/null; then echo "demo.test: FAIL: process $p still running"; exit 1; fi
done
if ! grep -q "the engine stopped cleanly (exit 0)" "$TMP/demo.out"; then
  echo "demo.test: FAIL: the engine did not exit cleanly:"; tail -5 "$TMP/demo.out"; exit 1
fi
echo "demo.test: stopped cleanly (exit $rc)"
exit 0
