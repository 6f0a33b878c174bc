#!/usr/bin/env bash
# Rule language end to end through the real binary ($CB_BIN, the sanitizer
# build): every example rule file compiles, every rule test passes, golden
# replays give their expected transitions byte for byte (and the same again:
# deterministic), and a file full of mistakes gives its expected diagnostics.
set -euo pipefail
ROOT=${CB_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${CB_BIN:-$ROOT/build/asan/citybrain}
cd "$ROOT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# etc/rules notify `ops` and `cap`: the channels of etc/citybrain.conf.
echo "-- check --config etc/citybrain.conf etc/rules etc/city-rules"
"$BIN" check --config etc/citybrain.conf etc/rules || fail=1
"$BIN" check --config etc/citybrain.conf etc/city-rules || fail=1

echo "-- every etc/rules and etc/city-rules file has a test"
for f in etc/rules/*.rules etc/city-rules/*.rules; do
  grep -qs "rules ../../$f" tests/rules/*.test || { echo "no test for $f"; fail=1; }
done

echo "-- citybrain test"
"$BIN" test tests/rules/*.test || fail=1

echo "-- golden replays"
for j in tests/rules/golden/*.jsonl; do
  n=${j%.jsonl}
  args=()
  [ -f "$n.args" ] && read -r -a args < "$n.args"
  "$BIN" replay --rules "$n.rules" --input "$j" "${args[@]}" > "$tmp/out" 2> "$tmp/err" || { echo "replay failed: $j"; cat "$tmp/err"; fail=1; }
  diff -u "$n.expected" "$tmp/out" || { echo "MISMATCH $j"; fail=1; }
  [ -f "$n.stderr" ] && { diff -u "$n.stderr" "$tmp/err" || { echo "MISMATCH stderr $j"; fail=1; }; }
  "$BIN" replay --rules "$n.rules" "${args[@]}" < "$j" > "$tmp/out2" 2>/dev/null
  cmp -s "$tmp/out" "$tmp/out2" || { echo "NOT DETERMINISTIC $j"; fail=1; }
  echo "ok   $j"
done

echo "-- replay --db stores what run would store"
g=tests/rules/golden/flood
read -r -a args < "$g.args"
"$BIN" replay --rules "$g.rules" --input "$g.jsonl" "${args[@]}" --db "$tmp/replay.db" > "$tmp/out" 2>/dev/null \
  || { echo "replay --db failed"; fail=1; }
diff -q "$g.expected" "$tmp/out" > /dev/null || { echo "replay --db changed the transitions"; fail=1; }
stored=$("$BIN" query --db "$tmp/replay.db" | wc -l)
[ "$stored" -gt 0 ] || { echo "replay --db stored no samples"; fail=1; }
echo "ok   replay --db ($stored samples)"

echo "-- diagnostics (against the channels of etc/citybrain.conf)"
for r in tests/rules/bad/*.rules; do
  set +e
  "$BIN" check --config etc/citybrain.conf "$r" 2> "$tmp/err" > /dev/null
  rc=$?
  set -e
  [ "$rc" = 1 ] || { echo "check $r: exit $rc, wanted 1"; fail=1; }
  diff -u "${r%.rules}.expected" "$tmp/err" || { echo "MISMATCH $r"; fail=1; }
  echo "ok   $r"
done
set +e
# Without --config, notify names are checked against the built-in defaults,
# and the error says how to check against a configuration.
"$BIN" check tests/rules/bad/notify.rules 2> "$tmp/err" > /dev/null
[ $? = 1 ] || { echo "check without --config: wanted exit 1"; fail=1; }
grep -q "notify.rules:8:12: error: unknown channel 'opz' in notify; channels without --config (the built-in defaults): ops, cap, log; give --config FILE" "$tmp/err" \
  || { echo "check without --config: no advice to give --config"; cat "$tmp/err"; fail=1; }
# A configuration that cannot be read is an error (1), not a usage error.
"$BIN" check --config "$tmp/none.conf" etc/rules 2> "$tmp/err" > /dev/null
[ $? = 1 ] && grep -q "none.conf: cannot open" "$tmp/err" || { echo "check --config missing file: wanted exit 1 naming it"; fail=1; }
"$BIN" check > /dev/null 2>&1; [ $? = 2 ] || { echo "check without paths: wanted exit 2"; fail=1; }
"$BIN" check --format yaml etc/rules > /dev/null 2>&1; [ $? = 2 ] || { echo "check --format yaml: wanted exit 2"; fail=1; }
"$BIN" check --config etc/citybrain.conf --format json tests/rules/bad/errors.rules 2> "$tmp/json" > /dev/null
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d)==14 and d[0]["code"]=="E008"' "$tmp/json" \
  || { echo "check --format json: bad JSON"; fail=1; }
set -e

exit $fail
