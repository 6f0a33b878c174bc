#!/usr/bin/env bash
# Runs libFuzzer targets built by tests/fuzz.mk one after another and prints
# one table: target, executions, exec/s, crashes, corpus size.
#
#   scripts/fuzz.sh SECONDS TARGET[=SECONDS]...
#
# Each target runs SECONDS (or its own, after '=') on its seeds (tests/fuzz/corpus/TARGET, read only)
# and its own corpus (build/fuzz/corpus/TARGET, where new inputs go). A crash,
# leak, sanitizer report or timeout stops that target: its input is saved as
# build/fuzz/crashes/TARGET-crash-..., the log's tail is printed, the other
# targets still run, and the script exits 1. Logs: build/fuzz/log/TARGET.log.
set -uo pipefail
cd "$(dirname "$0")/.."

# ---- per-target options: the one place they are written ------------------------
# target   max_len  (bytes of one input)
LIMITS='
rules     4096
decode    4096
http      8192
journal   16384
config    4096
chunk     4096
'
# -----------------------------------------------------------------------------------

if [ $# -lt 2 ]; then
  echo "usage: scripts/fuzz.sh SECONDS TARGET[=SECONDS]..." >&2
  exit 2
fi
seconds=$1
shift
B=build/fuzz
mkdir -p "$B/log" "$B/crashes"

stat_of() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }
# Corpus size: distinct inputs in the seeds and the run's own corpus.
corpus_size() {
  cat <(ls "tests/fuzz/corpus/$1" 2>/dev/null) <(ls "$B/corpus/$1" 2>/dev/null) | sort -u | wc -l
}

rows=()
failed=0
for arg in "$@"; do
  t=${arg%%=*}
  secs=$seconds
  [ "$t" != "$arg" ] && secs=${arg#*=}
  bin="$B/fuzz_$t"
  seeds="tests/fuzz/corpus/$t"
  if [ ! -x "$bin" ] || [ ! -d "$seeds" ]; then
    echo "fuzz: no target '$t' (need $bin and $seeds)" >&2
    failed=1
    continue
  fi
  max_len=$(awk -v t="$t" '$1 == t { print $2 }' <<< "$LIMITS")
  mkdir -p "$B/corpus/$t"
  log="$B/log/$t.log"
  echo "fuzz: $t for ${secs}s" >&2
  "$bin" -max_total_time="$secs" -max_len="${max_len:-4096}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$B/crashes/$t-" "$B/corpus/$t" "$seeds" > "$log" 2>&1
  rc=$?
  crashes=0
  if [ $rc -ne 0 ]; then
    crashes=1
    failed=1
    echo "fuzz: $t FAILED (exit $rc); the end of $log:" >&2
    tail -40 "$log" >&2
  fi
  execs=$(stat_of number_of_executed_units "$log")
  rate=$(stat_of average_exec_per_sec "$log")
  rows+=("$(printf '%-8s %12s %8s %7s %7s' "$t" "${execs:-?}" "${rate:-?}" "$crashes" \
    "$(corpus_size "$t")")")
done

printf '%-8s %12s %8s %7s %7s\n' target executions exec/s crashes corpus
for r in "${rows[@]}"; do echo "$r"; done
exit $failed
