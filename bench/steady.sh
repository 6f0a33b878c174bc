#!/usr/bin/env bash
# bench/steady.sh: the steady-state benchmark (issue 16, "Show it"): what the
# whole engine writes and burns per sample once every series has history.
# Run by `make bench` (bench/run.sh, section steady) and alone by
# `make bench-steady`.
#
#   1. A private mosquitto on a free loopback port and `citybrain run` (QoS 1,
#      storage on, no rules) on a fresh database in a directory on disk
#      (BENCH_STEADY_DIR, default under /var/tmp: /proc/PID/io's write_bytes
#      counts nothing on tmpfs).
#   2. History through the engine's own path: bench/flood_pub --history sends
#      HISTORY seconds of 1 Hz samples for each of SERIES topics (SenML packs
#      of 60 samples, in time order, QoS 1), one block of 60 seconds of every
#      series at a time, each committed before the next is sent
#      (citybrain_storage_rows_written_total).
#   3. Steady state: flood_pub --bare sends one sample per series per second
#      (a bare number on each topic, QoS 1, rate = SERIES msg/s) for SECONDS.
#      After WARMUP seconds the script snapshots /proc/PID/io, the CPU of
#      every thread (/proc/PID/task/*/stat, by thread name: MQTTAsync_rcv is
#      Paho's receive thread, cb-store the SQLite writer, citybrain the libuv
#      loop) and the committed row counter; again 5 seconds before the
#      publisher ends. Figures are per committed sample over that window.
#      The journal's segments are listed too: journal bytes per sample is
#      their growth over the window (journal_growth).
#      write_bytes counts a page of the page cache when it is dirtied;
#      cancelled_write_bytes the dirty pages dropped before the kernel wrote
#      them (a journal segment deleted first): the difference is what is
#      bound for the disk.
#   4. Committed means read from the store: once the publisher is done and
#      the counter has caught up, `citybrain query --from <steady start>`
#      (its own read-only connection) must list every sample sent.
#      Then the ceiling: FLOOD bare messages into the same series as fast as
#      flood_pub sends them (QoS 1, 1,000 in flight), committed samples/s
#      from the publisher's start until the counter (polled every 50 ms)
#      has them all, and the engine's CPU per message over that span.
#   5. Baseline, same run: bench/count_sub (a Paho subscriber that only
#      counts) on the same stream for BASE_SECONDS: its CPU per message and
#      its receive thread's, beside citybrain's.
#   With BENCH_STEADY_BASE=COMMIT (or a path to a citybrain binary) steps 1-4
#   run first for that engine (a commit is built from `git archive` in the
#   temporary directory), and the rows show HEAD beside it.
#
# Environment: BENCH_STEADY_SERIES (10000, at most 10,080),
# BENCH_STEADY_HISTORY (600 s), BENCH_STEADY_SECONDS (180),
# BENCH_STEADY_WARMUP (30 s), BENCH_STEADY_BASE_SECONDS (30),
# BENCH_STEADY_FROM and BENCH_STEADY_TO (epoch seconds: the window by the
# clock instead of WARMUP and SECONDS, e.g. one whole hour of rollup cycle),
# BENCH_STEADY_FLOOD (200000), BENCH_QUICK=1 (1,000 series, 120 s of
# history, 40 s steady, a flood of 20,000). CB (the engine under test,
# build/citybrain).
#
# Output: markdown table rows (| benchmark | figure | citybrain | baseline |
# ratio | goal |) on stdout, notes (lines starting with "- ") after them.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CB=${CB:-$ROOT/build/citybrain}
TOOLS=$ROOT/build/bench
QUICK=${BENCH_QUICK:-0}
SERIES=${BENCH_STEADY_SERIES:-10000}
HISTORY=${BENCH_STEADY_HISTORY:-600}
SECONDS_RUN=${BENCH_STEADY_SECONDS:-180}
WARMUP=${BENCH_STEADY_WARMUP:-30}
BASE_S=${BENCH_STEADY_BASE_SECONDS:-30}
BASE_REF=${BENCH_STEADY_BASE:-}
FLOOD=${BENCH_STEADY_FLOOD:-200000}
if [ "$QUICK" = 1 ]; then SERIES=1000; HISTORY=120; SECONDS_RUN=40; WARMUP=10; BASE_S=10; FLOOD=20000; fi
PACK=60
HISTORY=$(( (HISTORY + PACK - 1) / PACK * PACK ))
mkdir -p "${BENCH_STEADY_DIR:-/var/tmp}"
TMP=$(mktemp -d "${BENCH_STEADY_DIR:-/var/tmp}/citybrain-steady.XXXXXX")

log() { echo "steady: $*" >&2; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
start_broker

# ---- the engine --------------------------------------------------------------
committed() { cb_metric citybrain_storage_rows_written_total; }
# step_hist: the writer's step histogram, cumulative counts by bound ("le count")
step_hist() {
  curl -s --max-time 2 "http://127.0.0.1:$HPORT/metrics" |
    sed -n 's/^citybrain_storage_step_seconds_bucket{le="\([^"]*\)"} \([0-9]*\)$/\1 \2/p'
}
# wait_rows TARGET LIMIT_S [POLL_S]: polls the committed row counter
# (every 0.5 s unless told).
wait_rows() {
  local t0=$SECONDS c
  while [ $((SECONDS - t0)) -lt "$2" ]; do
    c=$(committed)
    [ "${c:-0}" -ge "$1" ] && return 0
    sleep "${3:-0.5}"
  done
  return 1
}
start_engine() { # BIN DIR
  HPORT=$(free_port)
  "$1" run --broker "$BROKER" --topic 'city/#' --topic 'bench/#' --qos 1 \
    --client-id "steady-cb-$$" --db "$2/cb.db" --http "127.0.0.1:$HPORT" \
    --log-level warn --set alerts.storm_window=0 --set rules.allow_none=true \
    > "$2/cb.log" 2>&1 &
  CB_PID=$!
  PIDS+=("$CB_PID")
  for _ in $(seq 300); do
    kill -0 "$CB_PID" 2>/dev/null || { log "citybrain exited: $(tail -3 "$2/cb.log")"; return 1; }
    mosquitto_pub -p "$BPORT" -t bench/probe -m 1 -q 1 2>/dev/null
    [ "$(committed)" -ge 1 ] 2>/dev/null && return 0
    sleep 0.2
  done
  log "citybrain did not come up: $(tail -3 "$2/cb.log")"
  return 1
}
# snapshot PID FILE: one line per figure, `key value`: the process's
# /proc/PID/io counters, then CPU seconds by thread name (thread_NAME; the
# numbered threads of a pool add up under one name), and the whole process.
snapshot() {
  {
    awk -F': ' '{ print $1, $2 }' "/proc/$1/io"
    for t in /proc/"$1"/task/*/stat; do cat "$t" 2>/dev/null; echo; done |
      awk -v hz="$(getconf CLK_TCK)" 'NF {
        name = $0; sub(/^[0-9]+ \(/, "", name); sub(/\) .*$/, "", name)
        rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
        gsub(/[^A-Za-z0-9_-]/, "_", name); sub(/[0-9]+$/, "", name)
        cpu[name] += (f[12] + f[13]) / hz }
        END { for (n in cpu) printf "thread_%s %.3f\n", n, cpu[n] }'
    awk -v hz="$(getconf CLK_TCK)" '{ printf "cpu_total %.3f\n", ($14 + $15) / hz }' "/proc/$1/stat"
    echo "committed $(committed)"
    echo "time $(now)"
    # the journal's segments (`journal_seg NAME BYTES`), for journal_growth
    segments "$(dirname "$2")/cb.db.journal"
  } > "$2"
}
# segments DIR: a line `journal_seg NAME BYTES` for each segment of the journal.
segments() {
  for f in "$1"/*.seg; do
    [ -e "$f" ] && echo "journal_seg $(basename "$f") $(stat -c %s "$f" 2>/dev/null || echo 0)"
  done
}
# journal_growth A B [POLL]: bytes the journal's segments grew from snapshot
# A to B: for each segment seen at B or in POLL (the segments listed every
# second in between), the largest size seen less its size at A (0 for a
# segment new since). A segment fills, rotates and is released once its
# records are committed; the polls miss at most the last second of a
# segment's growth before its release. The zeroed room grown ahead of the
# records (at most 16 KB) is counted as written.
journal_growth() {
  awk 'FILENAME == ARGV[1] && $1 == "journal_seg" { a[$2] = $3; next }
       $1 == "journal_seg" { if (!($2 in m) || $3 > m[$2]) m[$2] = $3 }
       END { g = 0
             for (k in m) g += m[k] - (k in a ? a[k] : 0)
             printf "%.0f\n", g }' "$@"
}
# delta A B KEY: B's KEY minus A's.
delta() { awk -v k="$3" 'FNR == NR && $1 == k { a = $2 } FNR != NR && $1 == k { b = $2 } END { printf "%.6f\n", b - a }' "$1" "$2"; }
per() { awk -v a="$1" -v n="$2" -v s="$3" 'BEGIN { if (n > 0) printf "%.2f", a * s / n; else print "" }'; }

# wal_tables WAL DB: the frames of WAL's current generation (the frames whose
# salts match its header, since the last checkpoint reset it) by the table
# or index that owns each page in DB (dbstat, read after the run: a page
# freed and reused meanwhile is counted under its new owner; pages on the
# freelist show as "free"), one line "N frames: name share %, ...".
wal_tables() {
  python3 - "$1" "$2" <<'PY' 2>/dev/null || echo "not counted"
import collections, sqlite3, struct, sys
wal = open(sys.argv[1], "rb").read()
_, _, psz, _, s1, s2, _, _ = struct.unpack(">8I", wal[:32])
pages, off = [], 32
while off + 24 + psz <= len(wal):
    pg, _, f1, f2 = struct.unpack(">4I", wal[off:off + 16])
    if (f1, f2) != (s1, s2):
        break
    pages.append(pg)
    off += 24 + psz
db = sqlite3.connect("file:" + sys.argv[2] + "?mode=ro", uri=True)
owner = {p: n for n, p in db.execute("SELECT name, pageno FROM dbstat")}
count = collections.Counter(owner.get(p, "free") for p in pages)
print("%d frames: " % len(pages) + ", ".join(
    "%s %.0f %%" % (n, 100.0 * c / len(pages)) for n, c in count.most_common(8)))
PY
}

# steady_run LABEL BIN: steps 1-4; leaves the figures in $TMP/LABEL/result.
steady_run() {
  local label=$1 bin=$2 dir=$TMP/$1 n_steady t_start fp s_win
  mkdir -p "$dir"
  : > "$dir/result"
  start_engine "$bin" "$dir" || return 1
  local base_rows
  base_rows=$(committed)
  # One block of PACK seconds for every series at a time, each committed
  # before the next is sent: the writer's pending rows stay under
  # storage.max_pending_rows however slow the machine is.
  local t0=$SECONDS b blocks=$((HISTORY / PACK)) hist_start=$(( $(date +%s) - HISTORY ))
  for b in $(seq 0 $((blocks - 1))); do
    "$TOOLS/flood_pub" --broker "$BROKER" --topics "$SERIES" --count "$SERIES" --qos 1 \
      --history "$HISTORY" --history-start "$hist_start" --pack "$PACK" \
      --skip $((b * SERIES)) > "$dir/pub_hist.txt" 2>&1
    if ! wait_rows $((base_rows + (b + 1) * SERIES * PACK)) 300 0.2; then
      log "$label: history block $b not committed ($(committed) of $((base_rows + (b + 1) * SERIES * PACK)) rows)"
      stop_cb
      return 1
    fi
  done
  echo "history_s $((SECONDS - t0))" >> "$dir/result"
  log "$label: $((SERIES * HISTORY)) history samples committed in $((SECONDS - t0)) s; $(du -sh "$dir" | cut -f1) on disk"
  base_rows=$(committed)
  if [ -n "${BENCH_STEADY_TO:-}" ]; then
    # a window set by the clock (epoch seconds), e.g. one whole hour of
    # rollup cycle: the publisher runs until 5 s past its end
    local t_now
    t_now=$(date +%s)
    SECONDS_RUN=$((BENCH_STEADY_TO + 5 - t_now))
    WARMUP=$((${BENCH_STEADY_FROM:-$((t_now + 30))} - t_now))
    [ "$WARMUP" -lt 10 ] && WARMUP=10
    log "$label: window from $(date -d @$((t_now + WARMUP)) +%T) to $(date -d @"$BENCH_STEADY_TO" +%T)"
  fi
  n_steady=$((SERIES * SECONDS_RUN))
  t_start=$(date +%s%3N)
  "$TOOLS/flood_pub" --broker "$BROKER" --topics "$SERIES" --count "$n_steady" --qos 1 \
    --rate "$SERIES" --bare 1 > "$dir/pub_steady.txt" 2>&1 &
  fp=$!
  PIDS+=("$fp")
  sleep "$WARMUP"
  snapshot "$CB_PID" "$dir/s0"
  step_hist > "$dir/h0"
  # the journal's segments every second through the window (journal_growth:
  # a segment may be created, filled and released between the snapshots)
  ( while :; do segments "$dir/cb.db.journal"; sleep 1; done ) > "$dir/segpoll" &
  local segp=$!
  s_win=$((SECONDS_RUN - WARMUP - 5))
  [ "$s_win" -lt 5 ] && s_win=5
  # a copy of the WAL halfway through the window: its frames by table
  # (wal_tables, after the engine has stopped)
  sleep $((s_win / 2))
  cp "$dir/cb.db-wal" "$dir/wal.copy" 2>/dev/null
  sleep $((s_win - s_win / 2))
  snapshot "$CB_PID" "$dir/s1"
  kill "$segp" 2>/dev/null; wait "$segp" 2>/dev/null
  step_hist > "$dir/h1"
  # the writer's steps between commits in the window: the bound of the
  # histogram's bucket that holds the longest, and how many took > 50 ms
  awk 'NR == FNR { a[$1] = $2; next }
       { d[$1] = $2 - a[$1]; le[++k] = $1 }
       END { tot = d["+Inf"]; top = "+Inf"
             for (i = 1; i <= k; i++) if (d[le[i]] == tot) { top = le[i]; break }
             printf "step_window_max_le %s\nsteps_window %d\nsteps_over_50ms %d\n", top, tot, tot - d["0.05"] }' \
    "$dir/h0" "$dir/h1" >> "$dir/result"
  echo "step_max_s $(curl -s --max-time 2 "http://127.0.0.1:$HPORT/metrics" |
    awk '$1 == "citybrain_storage_step_max_seconds" { print $2 }')" >> "$dir/result"
  wait "$fp"
  local caught=1
  wait_rows $((base_rows + n_steady)) 120 || caught=0
  local in_store
  in_store=$("$bin" query --db "$dir/cb.db" --from "$t_start" 2>/dev/null | grep -c '"topic":"city/')
  # The ceiling: FLOOD messages into the same series as fast as the
  # publisher goes (QoS 1, at most 1,000 in flight), timed from the
  # publisher's start until the counter says all are committed.
  local c0 f0 f1 cpu0 cpu1
  c0=$(committed)
  cpu0=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$CB_PID/stat")
  f0=$(now)
  "$TOOLS/flood_pub" --broker "$BROKER" --topics "$SERIES" --count "$FLOOD" --qos 1 \
    --bare 1 > "$dir/pub_flood.txt" 2>&1
  if wait_rows $((c0 + FLOOD)) 120 0.05; then
    f1=$(now)
    cpu1=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$CB_PID/stat")
    echo "flood_committed_per_s $(awk -v n="$FLOOD" -v a="$f0" -v b="$f1" 'BEGIN { printf "%.0f", n / (b - a) }')" >> "$dir/result"
    echo "flood_cpu_us_per_msg $(per "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }')" "$FLOOD" 1000000)" >> "$dir/result"
  fi
  stop_cb
  echo "wal_tables $(wal_tables "$dir/wal.copy" "$dir/cb.db")" >> "$dir/result"
  local n secs
  n=$(delta "$dir/s0" "$dir/s1" committed)
  secs=$(delta "$dir/s0" "$dir/s1" time)
  {
    echo "samples ${n%.*}"
    echo "window_s $secs"
    echo "committed_per_s $(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')"
    echo "write_bytes_per_sample $(per "$(delta "$dir/s0" "$dir/s1" write_bytes)" "$n" 1)"
    echo "disk_bytes_per_sample $(per "$(awk -v w="$(delta "$dir/s0" "$dir/s1" write_bytes)" \
      -v c="$(delta "$dir/s0" "$dir/s1" cancelled_write_bytes)" 'BEGIN { print w - c }')" "$n" 1)"
    echo "journal_bytes_per_sample $(per "$(journal_growth "$dir/s0" "$dir/s1" "$dir/segpoll")" "$n" 1)"
    echo "wchar_per_sample $(per "$(delta "$dir/s0" "$dir/s1" wchar)" "$n" 1)"
    echo "rchar_per_sample $(per "$(delta "$dir/s0" "$dir/s1" rchar)" "$n" 1)"
    echo "syscw_per_sample $(per "$(delta "$dir/s0" "$dir/s1" syscw)" "$n" 1)"
    echo "cpu_us_per_sample $(per "$(delta "$dir/s0" "$dir/s1" cpu_total)" "$n" 1000000)"
    for t in $(awk '$1 ~ /^thread_/ { print $1 }' "$dir/s1"); do
      echo "${t}_us_per_sample $(per "$(delta "$dir/s0" "$dir/s1" "$t")" "$n" 1000000)"
    done
    echo "sent $(kv "$dir/pub_steady.txt" sent)"
    echo "in_store $in_store"
    echo "caught_up $caught"
  } >> "$dir/result"
  log "$label: $(tr '\n' ' ' < "$dir/result")"
}

# base_run: count_sub on the same stream for BASE_S seconds; its CPU per
# message, whole and its receive thread's, from /proc like citybrain's.
base_run() {
  local dir=$TMP/count_sub n=$((SERIES * BASE_S)) sub fp
  mkdir -p "$dir"
  rm -f "$dir/ready"
  "$TOOLS/count_sub" --broker "$BROKER" --topic 'city/#' --qos 1 --count "$n" \
    --timeout $((BASE_S + 60)) --idle 10 --ready "$dir/ready" > "$dir/out.txt" 2>&1 &
  sub=$!
  PIDS+=("$sub")
  for _ in $(seq 200); do [ -f "$dir/ready" ] && break; sleep 0.05; done
  "$TOOLS/flood_pub" --broker "$BROKER" --topics "$SERIES" --count "$n" --qos 1 \
    --rate "$SERIES" --bare 1 > "$dir/pub.txt" 2>&1 &
  fp=$!
  PIDS+=("$fp")
  sleep 2
  snapshot "$sub" "$dir/s0" 2>/dev/null
  sleep $((BASE_S - 4))
  snapshot "$sub" "$dir/s1" 2>/dev/null
  wait "$fp"
  wait "$sub"
  # count_sub has no /metrics: messages in the window from its rate.
  local secs msgs
  secs=$(delta "$dir/s0" "$dir/s1" time)
  msgs=$(awk -v s="$secs" -v r="$SERIES" 'BEGIN { printf "%d", s * r }')
  {
    echo "cpu_us_per_sample $(per "$(delta "$dir/s0" "$dir/s1" cpu_total)" "$msgs" 1000000)"
    echo "thread_MQTTAsync_rcv_us_per_sample $(per "$(delta "$dir/s0" "$dir/s1" thread_MQTTAsync_rcv)" "$msgs" 1000000)"
    echo "received $(kv "$dir/out.txt" received) of $n"
  } > "$dir/result"
  log "count_sub: $(tr '\n' ' ' < "$dir/result")"
}

# base_engine: the citybrain of BENCH_STEADY_BASE (a binary, or a commit built here).
base_engine() {
  if [ -x "$BASE_REF" ]; then echo "$BASE_REF"; return 0; fi
  local src=$TMP/base-src
  mkdir -p "$src"
  git -C "$ROOT" archive "$BASE_REF" | tar -x -C "$src" || return 1
  log "building citybrain at $BASE_REF"
  make -C "$src" -j2 build/citybrain > "$TMP/base-build.log" 2>&1 || { log "base build failed"; return 1; }
  echo "$src/build/citybrain"
}

res() { kv "$TMP/$1/result" "$2"; }
HEAD_LABEL=head
BASE_LABEL=""
if [ -n "$BASE_REF" ]; then
  if BIN=$(base_engine); then
    BASE_LABEL=base
    steady_run base "$BIN" || BASE_LABEL=""
  fi
fi
steady_run "$HEAD_LABEL" "$CB" || { row "steady state" "" "not run (see the log)" "" "" ""; cat "$ROWS"; exit 1; }
base_run

# The rows: HEAD beside the base engine when there is one, else beside
# count_sub (CPU) or nothing (bytes, which count_sub does not write).
bcol() { # KEY FALLBACK_FILE_LABEL
  if [ -n "$BASE_LABEL" ]; then res base "$1"; elif [ -n "${2:-}" ]; then res "$2" "$1"; fi
}
bname=${BASE_REF:+citybrain $BASE_REF}
label="steady state, $SERIES series with ${HISTORY} s of history, 1 sample/series/s, QoS 1"
for f in "write_bytes_per_sample|bytes written per sample (/proc/PID/io write_bytes)|≤ 64" \
         "disk_bytes_per_sample|bytes bound for the disk per sample (write_bytes - cancelled_write_bytes)|" \
         "journal_bytes_per_sample|journal bytes per sample (growth of its segments)|" \
         "wchar_per_sample|bytes handed to write(2) per sample (wchar)|" \
         "syscw_per_sample|write system calls per sample (syscw)|" \
         "thread_cb-store_us_per_sample|writer (cb-store thread) CPU µs per sample|≤ 1" \
         "thread_MQTTAsync_rcv_us_per_sample|Paho receive thread CPU µs per sample|" \
         "thread_citybrain_us_per_sample|loop thread CPU µs per sample|" \
         "cpu_us_per_sample|whole engine CPU µs per message|" \
         "committed_per_s|committed samples/s (offered $SERIES/s)|$SERIES" \
         "flood_committed_per_s|flood of $FLOOD into these series: committed msg/s|" \
         "flood_cpu_us_per_msg|flood: whole engine CPU µs per message|"; do
  IFS='|' read -r key what goal <<< "$f"
  fb=""
  case "$key" in cpu_us_per_sample|thread_MQTTAsync_rcv_us_per_sample) fb=count_sub ;; esac
  b=$(bcol "$key" "$fb")
  bl=${bname:-$([ -n "$fb" ] && echo count_sub)}
  row "$label" "$what" "$(res head "$key")" "${b:+$b ($bl)}" "$(ratio "$(res head "$key")" "$b")" "$goal"
done
{
  for l in $BASE_LABEL head; do
    echo "- steady state ($l): $(res $l samples) samples committed in a $(res $l window_s | cut -d. -f1) s window; history committed in $(res $l history_s) s; after the run the store lists $(res $l in_store) of $(res $l sent) samples sent (citybrain query); threads: $(awk '$1 ~ /^thread_/ { k = substr($1, 8); sub(/_us_per_sample$/, "", k); printf "%s%s %s", s, k, $2; s = ", " }' "$TMP/$l/result") (µs per sample)"
  done
  for l in $BASE_LABEL head; do
    echo "- WAL frames by table ($l, a copy of the WAL halfway through the window): $(awk '$1 == "wal_tables" { $1 = ""; sub(/^ /, ""); print; exit }' "$TMP/$l/result")"
  done
  for l in $BASE_LABEL head; do
    [ "$(res $l steps_window)" -gt 0 ] 2>/dev/null &&
      echo "- writer steps between commits ($l, citybrain_storage_step_seconds): $(res $l steps_window) in the window, the longest at most $(res $l step_window_max_le) s, $(res $l steps_over_50ms) over 50 ms; the longest since start (history included) $(res $l step_max_s) s"
  done
  echo "- steady state baseline (count_sub, $BASE_S s of the same stream): $(tr '\n' ' ' < "$TMP/count_sub/result")"
} >> "$NOTES"
cat "$ROWS"
echo
cat "$NOTES"
