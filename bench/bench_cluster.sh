#!/usr/bin/env bash
# bench_cluster: citybrain through a three-node RabbitMQ cluster (twins of one
# partition, the lease, quorum sessions: docs/cluster.md) against one engine
# on a single mosquitto, the same streams in the same run. Prints
# `key value baseline` lines for bench/run.sh (the "programs" section):
#
#   qos1_msg_per_s         N QoS 1 messages published by flood_pub as fast as
#                          the broker confirms them; messages / seconds from
#                          the publisher's start until the speaking engine has
#                          handled all N
#   alert_p50_ms, _p99_ms  publish-to-alert: flood_pub at RATE (200) msg/s QoS 1,
#                          every 50th message fires bench/rules/latency.rules;
#                          its send time to the alert on the feed (alert_sub)
#
# Needs build/citybrain and build/bench/{flood_pub,alert_sub} (make bench
# builds them). BENCH_QUICK=1: smaller counts. Every process started here is
# stopped by its pid; everything on loopback.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$ROOT/scripts/rabbit_cluster.sh" ] || ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
CB=${CB_BIN:-$ROOT/build/citybrain}
TOOLS=$ROOT/build/bench
N=10000
LAT_N=3000
RATE=200
[ "${BENCH_QUICK:-0}" = 1 ] && { N=3000; LAT_N=1000; }
TMP=$(mktemp -d /tmp/cbbench-cluster.XXXXXX)
chmod 755 "$TMP"
. scripts/broker.sh
. scripts/rabbit_cluster.sh
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rabbit_cluster_stop
  rm -rf "$TMP"
}
trap cleanup EXIT
die() { echo "bench_cluster: $*" >&2; exit 1; }

handled() { # HTTP_PORT: messages the engine has handled
  curl -s --max-time 2 "http://127.0.0.1:$1/metrics" |
    awk '/^citybrain_ingest_messages_total/ { n += $2 } END { printf "%d\n", n }'
}
# engine NAME BROKER_URL HTTP_PORT [run options]: starts one engine
engine() {
  local name=$1 url=$2 port=$3
  shift 3
  mkdir -p "$TMP/$name"
  "$CB" run --broker "$url" --db "$TMP/$name/cb.db" --http "127.0.0.1:$port" \
    --rules bench/rules/latency.rules --log-level warn --set alerts.storm_window=0 \
    --set rules.watch=false "$@" > "$TMP/$name/log" 2>&1 &
  PIDS+=($!)
}
# measure LABEL BROKER_URL HTTP_PORT: prints "RATE P50 P99" for one target
measure() {
  local label=$1 url=$2 port=$3 base t0 t1 n
  base=$(handled "$port")
  t0=$(date +%s.%N)
  "$TOOLS/flood_pub" --broker "$url" --count "$N" --qos 1 --prefix city > "$TMP/$label.flood" ||
    die "$label: flood_pub failed"
  for _ in $(seq 1200); do
    n=$(handled "$port")
    [ "$n" -ge $((base + N)) ] && break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  [ "$n" -ge $((base + N)) ] || die "$label: the engine handled $((n - base)) of $N"
  local rate
  rate=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
  local marks=$((LAT_N / 50))
  rm -f "$TMP/$label.ready"
  "$TOOLS/alert_sub" --broker "$url" --count "$marks" --timeout 60 --idle 5 \
    --ready "$TMP/$label.ready" > "$TMP/$label.alerts" &
  local asub=$!
  for _ in $(seq 200); do [ -f "$TMP/$label.ready" ] && break; sleep 0.05; done
  "$TOOLS/flood_pub" --broker "$url" --count "$LAT_N" --rate "$RATE" --qos 1 --prefix city \
    --mark-every 50 > "$TMP/$label.marks" || die "$label: flood_pub (latency) failed"
  wait "$asub"
  awk '$1 == "mark" { sent[$2] = $3 } $1 == "alert" && ($2 in sent) { print ($3 - sent[$2]) / 1000 }' \
    "$TMP/$label.marks" "$TMP/$label.alerts" | sort -n > "$TMP/$label.lat"
  local got p50 p99
  got=$(wc -l < "$TMP/$label.lat")
  [ "$got" -gt 0 ] || die "$label: no alert received"
  p50=$(awk -v n="$got" 'NR == int(n * 0.50 + 0.5) || (NR == 1 && n == 1) { printf "%.2f", $1 }' "$TMP/$label.lat")
  p99=$(awk -v n="$got" 'NR == int(n * 0.99 + 0.5) || (NR == 1 && n == 1) { printf "%.2f", $1 }' "$TMP/$label.lat")
  echo "$rate $p50 $p99"
}
wait_http() { # PORT
  for _ in $(seq 100); do curl -s --max-time 1 "127.0.0.1:$1/api/health" >/dev/null && return 0; sleep 0.1; done
  return 1
}

[ -x "$CB" ] && [ -x "$TOOLS/flood_pub" ] && [ -x "$TOOLS/alert_sub" ] || die "not built"

# The single broker: one engine on a private mosquitto that, as bench/run.sh's,
# drops no QoS 1 message for a slow subscriber.
BPORT=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 1000\n' \
  "$BPORT" > "$TMP/mosquitto.conf"
mosquitto -c "$TMP/mosquitto.conf" > "$TMP/mosquitto.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  mosquitto_pub -p "$BPORT" -t bench/ping -m x 2>/dev/null && break
  sleep 0.05
done
sport=$(free_port)
engine single "tcp://127.0.0.1:$BPORT" "$sport" --topic 'city/#' --topic 'bench/#' \
  --client-id bench-single
wait_http "$sport" || die "the single engine did not start"
read -r s_rate s_p50 s_p99 <<< "$(measure single "tcp://127.0.0.1:$BPORT" "$sport")"
[ -n "${s_p99:-}" ] || exit 1

# The cluster: twins a (MQTT on node 1) and b (node 2), the lease on all three.
rabbit_cluster_start "$TMP" 3 || die "the RabbitMQ cluster did not start"
lease=()
for i in 1 2 3; do lease+=(--set "cluster.lease=amqp://guest:guest@127.0.0.1:${RAMQP[$i]}"); done
declare -A TPORT
for t in a b; do
  TPORT[$t]=$(free_port)
  node=1; [ "$t" = b ] && node=2
  engine "twin-$t" "tcp://127.0.0.1:${RMQTT[$node]}" "${TPORT[$t]}" \
    --set cluster.partition=bench --set cluster.twin=$t \
    --set "cluster.district=bench city city/#" --set "cluster.district=bench marks bench/#" \
    "${lease[@]}"
done
holder=
for _ in $(seq 300); do
  for t in a b; do
    st=$(curl -s --max-time 1 "127.0.0.1:${TPORT[$t]}/api/health" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["lease"]["state"])' 2>/dev/null)
    [ "$st" = holder ] && holder=$t
  done
  [ -n "$holder" ] && break
  sleep 0.1
done
[ -n "$holder" ] || die "no twin took the lease"
node=1; [ "$holder" = b ] && node=2
read -r c_rate c_p50 c_p99 <<< "$(measure cluster "tcp://127.0.0.1:${RMQTT[$node]}" "${TPORT[$holder]}")"
[ -n "${c_p99:-}" ] || exit 1

echo "qos1_msg_per_s $c_rate $s_rate"
echo "alert_p50_ms $c_p50 $s_p50"
echo "alert_p99_ms $c_p99 $s_p99"
