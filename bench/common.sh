# bench/common.sh: sourced by bench/run.sh and bench/steady.sh. The caller
# sets TMP (a private temporary directory, removed at exit) first. Gives PIDS
# (processes to end at exit), ROWS and NOTES (the table's rows and the notes
# below it), the helpers below and, with start_broker, a private mosquitto on
# a free loopback port (BPORT, BROKER).

PIDS=()
ROWS=$TMP/rows.md
NOTES=$TMP/notes.md
: > "$ROWS"
: > "$NOTES"

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# row BENCHMARK FIGURE CITYBRAIN BASELINE RATIO GOAL
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$@" >> "$ROWS"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "") printf "%.2f", a / b; else print "n/a" }'; }
kv() { awk -v k="$2" '$1 == k { print $2; exit }' "$1"; }
now() { date +%s.%N; }

start_broker() {
  BPORT=$(free_port)
  cat > "$TMP/mosquitto.conf" <<CONF
listener $BPORT 127.0.0.1
allow_anonymous true
persistence false
log_type error
# No message may be dropped by the broker, so "all N handled" is reachable;
# in-flight QoS 1 towards each subscriber matches citybrain's mqtt.max_inflight.
max_queued_messages 0
max_inflight_messages 1000
CONF
  mosquitto -c "$TMP/mosquitto.conf" > "$TMP/mosquitto.log" 2>&1 &
  PIDS+=("$!")
  BROKER=tcp://127.0.0.1:$BPORT
  for _ in $(seq 100); do
    mosquitto_pub -p "$BPORT" -t bench/ping -m x 2>/dev/null && break
    sleep 0.05
  done
}

# The engine started by the caller: CB_PID, its /metrics on HPORT.
CB_PID=""
HPORT=""
# stop_cb: SIGINT, up to 10 s for a clean stop, then SIGKILL.
stop_cb() {
  if [ -n "$CB_PID" ]; then
    kill -INT "$CB_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$CB_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$CB_PID" 2>/dev/null
    wait "$CB_PID" 2>/dev/null
  fi
  CB_PID=""
}
# cb_metric NAME: the sum of a metric's samples (all label sets), integers.
cb_metric() {
  curl -s --max-time 2 "http://127.0.0.1:$HPORT/metrics" |
    awk -v k="$1" '$1 == k || index($1, k "{") == 1 { n += $2; f = 1 } END { if (f) printf "%d\n", n }'
}
