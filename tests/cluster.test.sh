#!/usr/bin/env bash
# make cluster-test (also run by make test): partitions and twins on a
# three-node RabbitMQ cluster (docs/cluster.md), everything on loopback.
#
#   two partitions (north: d01 d02, south: d03 d04) x two twins; each twin's
#   MQTT on one node (north a: 1, north b: 2, south a: 2, south b: 3), its
#   lease client on all three; QoS 1 telemetry with scripted incidents (each
#   cycle fires and resolves every district) published through nodes 1 and 2;
#   the alert feed recorded by a persistent QoS 1 subscriber on node 1.
#   The city tier: the partition `city` x two twins (city a on node 1, city b
#   on node 2) with etc/city-rules, fed by every district twin's export
#   (federation.export_topic, federation.engine = the partition's name).
#
#   phase 1  all up
#   phase 2  kill -9 of broker node 3 (south b's MQTT and any lease on it)
#   phase 3  north's and the city's lease-holding twins hang (SIGSTOP) while
#            incidents go on, then kill -9: each standby must take over
#            within mqtt.keepalive x 1.5 + 2 s and announce what the other
#            did not
#   phase 4  node 3 and the killed twins back
#
# Asserts: every published sample stored by each district twin that was never
# killed; every expected transition of every district, and of the city rule
# districts_flooding (fires in every cycle: all four districts flood at once,
# resolves when they ebb), announced on the feed at least once and at most
# twice (runs of the same state), in order; the takeover times. Every process
# is started here and stopped by its pid.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CB=${CB_BIN:-$ROOT/build/asan/citybrain}
[ -x "$CB" ] || CB=$ROOT/build/citybrain
KEEPALIVE=5
TMP=$(mktemp -d /tmp/cbcluster.XXXXXX)
chmod 755 "$TMP"
. scripts/broker.sh
. scripts/rabbit_cluster.sh
declare -A EPID
SUBPID=
cleanup() {
  for k in "${!EPID[@]}"; do kill -9 "${EPID[$k]}" 2>/dev/null && wait "${EPID[$k]}" 2>/dev/null; done
  [ -n "$SUBPID" ] && kill "$SUBPID" 2>/dev/null && wait "$SUBPID" 2>/dev/null
  rabbit_cluster_stop
  if [ "${KEEP:-0}" = 1 ]; then echo "cluster.test: kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
fail=0
say() { echo "cluster.test: $*"; }
bad() { echo "FAIL cluster.test: $*"; fail=1; }

t0=$(date +%s)
rabbit_cluster_start "$TMP" 3 || { bad "the RabbitMQ cluster did not start"; exit 1; }
say "three RabbitMQ nodes in one cluster after $(( $(date +%s) - t0 )) s"

cat > "$TMP/river.rules" <<'EOF'
rule river_high {
  match    "city/{district}/river/{sensor}"
  when     level > 5
  clear    level < 3
  severity major
  message  "{district}/{sensor}: level {level:.1f}"
}
# What the city tier reads: one instance per district, exported.
rule river_flood {
  match    "city/{district}/river/{sensor}"
  per      district
  when     max(sensors: level) > 5
  clear    max(sensors: level) < 3
  severity major
}
EOF
# twin -> partition, MQTT node
declare -A PART=([north-a]=north [north-b]=north [south-a]=south [south-b]=south
  [city-a]=city [city-b]=city)
declare -A NODE=([north-a]=1 [north-b]=2 [south-a]=2 [south-b]=3 [city-a]=1 [city-b]=2)
TWINS="north-a north-b south-a south-b city-a city-b"
declare -A HTTP
for tw in "${!PART[@]}"; do
  mkdir -p "$TMP/$tw"
  HTTP[$tw]=$(free_port)
  {
    echo "mqtt.broker = tcp://127.0.0.1:${RMQTT[${NODE[$tw]}]}"
    echo "mqtt.keepalive = ${KEEPALIVE}s"
    echo "mqtt.reconnect_min = 200ms"
    echo "mqtt.reconnect_max = 1s"
    echo "storage.db = $TMP/$tw/cb.db"
    echo "rules.watch = false"
    echo "http.listen = 127.0.0.1:${HTTP[$tw]}"
    echo "alerts.storm_window = 0"
    echo "cluster.partition = ${PART[$tw]}"
    echo "cluster.twin = ${tw#*-}"
    if [ "${PART[$tw]}" = city ]; then
      echo "rules.path = $ROOT/etc/city-rules"
      echo "cluster.district = city sz citybrain/export/sz/#"
    else
      echo "rules.path = $TMP/river.rules"
      echo "cluster.district = north d01 city/d01/#"
      echo "cluster.district = north d02 city/d02/#"
      echo "cluster.district = south d03 city/d03/#"
      echo "cluster.district = south d04 city/d04/#"
      # twins of a partition export under one name: the city sees one sensor
      echo "federation.engine = ${PART[$tw]}"
      echo "federation.export_topic = citybrain/export/sz"
    fi
    for i in 1 2 3; do echo "cluster.lease = amqp://guest:guest@127.0.0.1:${RAMQP[$i]}"; done
    echo "cluster.lease_heartbeat = 2s"
  } > "$TMP/$tw/citybrain.conf"
done

start_twin() { # TWIN
  "$CB" run --config "$TMP/$1/citybrain.conf" >> "$TMP/$1/log" 2>&1 &
  EPID[$1]=$!
}
health() { # TWIN FIELD: the lease's field in /api/health
  curl -s --max-time 2 "127.0.0.1:${HTTP[$1]}/api/health" |
    python3 -c "import json,sys; print(json.load(sys.stdin)['lease']['$2'])" 2>/dev/null
}
holder_of() { # PARTITION: the twin that holds its lease (empty when none)
  local tw
  for tw in "$1-a" "$1-b"; do
    [ -n "${EPID[$tw]:-}" ] && [ "$(health "$tw" state)" = holder ] && { echo "$tw"; return; }
  done
}
wait_holder() { # PARTITION SECONDS
  local h
  for _ in $(seq $(($2 * 10))); do
    h=$(holder_of "$1")
    [ -n "$h" ] && { echo "$h"; return 0; }
    sleep 0.1
  done
  return 1
}
publish() { # CYCLES: through nodes 1 and 2, every district
  python3 tests/support/cluster_pub.py "${RMQTT[1]},${RMQTT[2]}" d01,d02,d03,d04 "$1" \
    >> "$TMP/pub.log" || bad "the publisher failed"
  CYCLES=$((CYCLES + $1))
}
CYCLES=0

# The feed's recorder: a persistent QoS 1 session on node 1 (never killed).
mosquitto_sub -h 127.0.0.1 -p "${RMQTT[1]}" -i cbt-feed -c -q 1 -t 'citybrain/alerts/#' \
  > "$TMP/feed.txt" 2> "$TMP/sub.log" &
SUBPID=$!
for tw in $TWINS; do start_twin "$tw"; done
for p in north south city; do
  h=$(wait_holder "$p" 60) || { bad "no twin of $p took the lease within 60 s"; exit 1; }
  say "$p: $h holds the lease"
done
sleep 1

say "phase 1: all up"
publish 2

say "phase 2: kill -9 of broker node 3 (south b's MQTT)"
k0=$(date +%s%3N)
kill -9 "${RPID[3]}"; wait "${RPID[3]}" 2>/dev/null
# south b cannot publish now: the lease must go to (or stay with) south a
took=
for _ in $(seq 300); do
  [ "$(health south-a state)" = holder ] && { took=$(( $(date +%s%3N) - k0 )); break; }
  sleep 0.05
done
if [ -z "$took" ]; then
  bad "south: south-a did not hold the lease after node 3 was lost"
else
  say "south: south-a holds the lease $took ms after node 3 was killed"
fi
publish 2

say "phase 3: north's and the city's lease holders hang while incidents go on, then kill -9"
declare -A VICTIM STANDBY
for p in north city; do
  VICTIM[$p]=$(holder_of $p)
  [ -n "${VICTIM[$p]}" ] || { bad "$p has no holder"; exit 1; }
  STANDBY[$p]=$p-a; [ "${VICTIM[$p]}" = $p-a ] && STANDBY[$p]=$p-b
done
# Stopped, a holder announces nothing while its lease connection is still
# open: the standby computes these incidents itself and must announce them
# when it takes over. (Killed while telemetry flows instead, the broker
# delivered nothing during the takeover in every run: nothing to catch up.)
for p in north city; do kill -STOP "${EPID[${VICTIM[$p]}]}"; done
publish 1
k0=$(date +%s%3N)
for p in north city; do
  v=${VICTIM[$p]}
  kill -9 "${EPID[$v]}"; wait "${EPID[$v]}" 2>/dev/null; unset "EPID[$v]"
done
limit=$(( KEEPALIVE * 1500 + 2000 ))
for p in north city; do
  standby=${STANDBY[$p]} victim=${VICTIM[$p]} took=
  for _ in $(seq 300); do # speaking: the loop has taken the lease's news, not just the client
    [ "$(health "$standby" speaking)" = True ] && { took=$(( $(date +%s%3N) - k0 )); break; }
    sleep 0.05
  done
  if [ -z "$took" ]; then
    bad "$p: $standby did not take the lease after $victim was killed"
  elif [ "$took" -gt "$limit" ]; then
    bad "$p: $standby took over after $took ms, more than keepalive x 1.5 + 2 s = $limit ms"
  else
    say "$p: $standby took over $took ms after $victim was killed (limit $limit ms)"
  fi
  caught=$(curl -s "127.0.0.1:${HTTP[$standby]}/metrics" |
    awk '$1 == "citybrain_alerts_takeover_announced_total" { print $2 }')
  if [ "${caught:-0}" -gt 0 ]; then
    say "$p: $standby announced $caught event(s) on taking over that $victim had not"
  else
    bad "$p: $standby announced nothing on taking over; the hung holder had announced nothing"
  fi
done
publish 1

say "phase 4: node 3, ${VICTIM[north]} and ${VICTIM[city]} back"
rabbit_node_start "$TMP" 3
for p in north city; do start_twin "${VICTIM[$p]}"; done
rabbit_node_wait "$TMP" 3 || bad "node 3 did not come back"
publish 2

# Settle: every survivor has every sample, the feed is quiet.
expect_part=$((CYCLES * 4 * 2)) # samples per partition: 4 levels x 2 districts per cycle
survivors="${STANDBY[north]} south-a"
for tw in $survivors; do
  n=0
  for _ in $(seq 600); do
    # (`samples` is citybrain's virtual table, unknown to the sqlite3 shell,
    # and the open head's blocks are citybrain's encoding: `citybrain query`
    # reads every stored sample, a redelivery once, while the node writes)
    n=$("$CB" query --db "$TMP/$tw/cb.db" 2>/dev/null | grep -c '"ts"' || true)
    n=${n:-0}
    [ "$n" -ge "$expect_part" ] && break
    sleep 0.1
  done
  if [ "$n" -eq "$expect_part" ]; then
    say "$tw stored all $n samples of its partition"
  else
    bad "$tw stored $n samples of its partition, $expect_part were published"
  fi
done
prev=-1
for _ in $(seq 100); do
  cur=$(wc -l < "$TMP/feed.txt")
  [ "$cur" = "$prev" ] && break
  prev=$cur
  sleep 1
done
kill "$SUBPID" 2>/dev/null; wait "$SUBPID" 2>/dev/null; SUBPID=

# Each district, and the city (two districts flooding at once: all four
# flood in every cycle): firing, resolved once per cycle; repeats at most twice.
python3 - "$TMP/feed.txt" "$CYCLES" <<'EOF' || fail=1
import json, sys
from collections import defaultdict
seq = defaultdict(list)
for line in open(sys.argv[1]):
    t = json.loads(line)
    seq[t["id"]].append(t["state"])
cycles, ok = int(sys.argv[2]), True
ids = [("river_high/city/%s/river/s1" % d, d) for d in ("d01", "d02", "d03", "d04")]
ids.append(("districts_flooding/city=sz", "the city"))
for i, d in ids:
    states = seq.get(i, [])
    runs = []
    for s in states:
        if runs and runs[-1][0] == s:
            runs[-1][1] += 1
        else:
            runs.append([s, 1])
    want = ["firing", "resolved"] * cycles
    got = [r[0] for r in runs]
    twice = sum(1 for r in runs if r[1] == 2)
    # Repeats belong to the moments the voice moved (a node lost, a twin
    # killed, back): twins that both spoke would repeat everything.
    if twice > 4:
        print("FAIL cluster.test: %s: %d of %d transitions announced twice: more than one voice?"
              % (d, twice, len(want)))
        ok = False
    elif got != want:
        print("FAIL cluster.test: %s announced %s, expected %s" % (d, got, want))
        ok = False
    elif any(r[1] > 2 for r in runs):
        print("FAIL cluster.test: %s: a transition announced more than twice: %s" % (d, runs))
        ok = False
    else:
        print("cluster.test: %s: all %d transitions announced, %d of them twice" %
              (d, len(want), twice))
sys.exit(0 if ok else 1)
EOF
say "publisher: $(tr '\n' ' ' < "$TMP/pub.log")"
# A clean stop gives the lease up and closes everything (ASan checks leaks).
for tw in "${!EPID[@]}"; do
  kill -TERM "${EPID[$tw]}"
  if wait "${EPID[$tw]}"; then
    unset "EPID[$tw]"
  else
    bad "$tw did not stop cleanly on SIGTERM"
  fi
done
if grep -l "Sanitizer" "$TMP"/*/log >/dev/null 2>&1; then
  bad "a sanitizer report: $(grep -l Sanitizer "$TMP"/*/log)"
fi
if [ "$fail" -ne 0 ]; then
  for tw in $TWINS; do echo "== $tw"; tail -n 15 "$TMP/$tw/log"; done
  exit 1
fi
say "ok in $(( $(date +%s) - t0 )) s"
