#!/usr/bin/env bash
# The floors of the house, and the check that keeps every #include on them.
#
#   scripts/floors.sh [ROOT]     exit 0 when every include is allowed, 1 with
#                                one "file:line: ..." per violation otherwise
#   scripts/floors.sh --modules  the modules, lowest floor first (the Makefile
#                                builds these folders)
#
# A file includes only from its own module or from a module on a lower floor,
# so the folders show which way the data flows. Modules of one floor never
# include each other unless an `allow` line below says so. `deny` lines
# forbid one module a header of a lower floor that the floor rule would let
# through (rules/ and storage/ never log, never touch the network: they
# return codes and diagnostics, and the daemon decides what to print).
#
# tests/ and bench/ stand outside the house: they may include anything.
# An include without a folder ("foo.h") is resolved beside the including
# file, so it stays inside the module.
set -euo pipefail

# ---- the table: this is the one place the floors are written ----------------
# floor  modules (lowest first)
TABLE='
0 base
1 ingest rules storage sim lease
2 alerts
3 api
4 cmd
'
# allow FROM TO      sideways include between modules of one floor (none today)
# deny  FROM HEADER  a header of a lower floor that FROM must not include
RULES='
deny rules base/log.h
deny rules base/net.h
deny rules base/metrics.h
deny storage base/log.h
deny storage base/net.h
deny storage base/metrics.h
'
# -----------------------------------------------------------------------------

if [ "${1:-}" = --modules ]; then
    awk 'NF { $1 = ""; printf "%s", $0 }' <<<"$TABLE" | xargs echo
    exit 0
fi

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"

declare -A floor
while read -r f mods; do
    [ -n "$f" ] || continue
    for m in $mods; do floor[$m]=$f; done
done <<<"$TABLE"

violations=0
report() { # file line message
    echo "$1:$2: $3" >&2
    violations=$((violations + 1))
}

for m in "${!floor[@]}"; do
    [ -d "$m" ] || { report "$m" 0 "module '$m' is in the floors table but has no folder"; continue; }
done

shopt -s nullglob
for m in "${!floor[@]}"; do
    for file in "$m"/*.c "$m"/*.h; do
        lineno=0
        while IFS= read -r line; do
            lineno=$((lineno + 1))
            [[ $line =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"([^\"]+)\" ]] || continue
            inc=${BASH_REMATCH[1]}
            if [[ $inc != */* ]]; then
                continue # beside the file: its own module
            fi
            to=${inc%%/*}
            if [ -z "${floor[$to]+x}" ]; then
                report "$file" "$lineno" "includes \"$inc\": '$to' is not a module of the floors table (scripts/floors.sh)"
                continue
            fi
            if grep -qx "deny $m $inc" <<<"$RULES"; then
                report "$file" "$lineno" "includes \"$inc\": $m/ must not use $inc (scripts/floors.sh)"
                continue
            fi
            [ "$to" = "$m" ] && continue
            if ((floor[$to] > floor[$m])); then
                report "$file" "$lineno" "includes \"$inc\": $m/ (floor ${floor[$m]}) reaches up to $to/ (floor ${floor[$to]})"
            elif ((floor[$to] == floor[$m])) && ! grep -qx "allow $m $to" <<<"$RULES"; then
                report "$file" "$lineno" "includes \"$inc\": $m/ and $to/ share floor ${floor[$m]}, and the table allows no include between them"
            fi
        done <"$file"
    done
done

if ((violations)); then
    echo "floors: $violations include(s) break the floors of the house (table in scripts/floors.sh)" >&2
    exit 1
fi
echo "floors: every include stays on its floor or goes down"
