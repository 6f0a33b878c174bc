#!/usr/bin/env bash
# The floors check (scripts/floors.sh) passes on the tree as it is, and fails,
# naming file and line, on a copy of the tree with each kind of violation:
# an include that reaches up a floor, one sideways between modules of one
# floor, a denied header (rules/ logging), and a folder outside the table.
set -euo pipefail
ROOT=${CB_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

echo "-- the tree as it is"
bash scripts/floors.sh "$ROOT" || fail=1

# expect_violation NAME FILE LINE_TEXT PATTERN: a fresh copy of the modules,
# LINE_TEXT appended to FILE, and the check must fail with PATTERN on
# FILE:LINE.
expect_violation() {
    local name=$1 file=$2 text=$3 pattern=$4
    rm -rf "$tmp/tree" && mkdir -p "$tmp/tree/scripts"
    cp scripts/floors.sh "$tmp/tree/scripts/"
    for m in $(bash scripts/floors.sh --modules); do cp -r "$m" "$tmp/tree/"; done
    printf '%s\n' "$text" >>"$tmp/tree/$file"
    local line
    line=$(wc -l <"$tmp/tree/$file")
    if bash "$tmp/tree/scripts/floors.sh" "$tmp/tree" 2>"$tmp/err" >/dev/null; then
        echo "FAIL $name: the check passed"; fail=1; return
    fi
    if ! grep -q "^$file:$line: .*$pattern" "$tmp/err"; then
        echo "FAIL $name: expected '$file:$line: ...$pattern', got:"; cat "$tmp/err"; fail=1; return
    fi
    echo "ok   $name: $(head -n1 "$tmp/err")"
}

expect_violation "up a floor"   storage/store.c  '#include "alerts/alerts.h"' 'reaches up to alerts/'
expect_violation "ground up"    base/strbuf.c    '#include "cmd/commands.h"'  'reaches up to cmd/'
expect_violation "sideways"     ingest/decode.c  '#include "rules/rules.h"'   'share floor 1'
expect_violation "denied"       rules/engine.c   '#include "base/log.h"'      'must not use base/log.h'
expect_violation "unknown"      api/routes.c     '#include "core/log.h"'      "'core' is not a module"

if [ "$fail" -ne 0 ]; then echo "floors.test: FAILED"; exit 1; fi
echo "floors.test: ok"
